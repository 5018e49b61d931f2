//! `nats-publish`: messages to NATS subjects, core or JetStream.
//!
//! A batch is taken from the input only while connected. Core: each message
//! is published and the batch flushed to the server before it is dropped
//! (acknowledged). JetStream (`stream` set): each message is published with
//! a `Nats-Msg-Id` and the batch's PubAcks awaited; a message is dropped only
//! once confirmed, and what was not confirmed is published again (same id,
//! so the server drops a duplicate) after the reconnection backoff
//! (`sink_retry::Retry`, whose wait a shutdown ends, the rest rejected).

use std::sync::OnceLock;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage as Publish;
use async_nats::jetstream::{self, stream};
use async_nats::{Client, HeaderMap, Subject};
use bytes::Bytes;
use fbp_runtime::link::Link;
use fbp_runtime::queue::InPort;
use fbp_runtime::spec::{KeySpec, KeyType};
use fbp_runtime::{
    Ack, Acks, BuildContext, ComponentSpec, Context, Delivery, Failure, Instance, Kind, Message, PortSpec, Task,
    TaskFuture,
};
use serde::Deserialize;

use super::connect::{Conn, ConnConfig, Connection, REPLY_CAPACITY, config_keys};
use super::{encode, headers_out};
use crate::net::template::Template;
use crate::sink_retry::{Fault, Retry};

/// The `nats-publish` declaration.
pub static SPEC: ComponentSpec = ComponentSpec {
    name: "nats-publish",
    summary: "Publish messages to NATS subjects (core, or JetStream with acknowledged publishes).",
    doc: "Publishes each message to `subject`, a template: `sensors.{{ .sensor }}` takes the \
          payload's field, `{{ $meta.topic }}` the incoming subject or topic (a message whose \
          template fails goes to `err`). Strings and bytes are sent as they are, other payloads as \
          JSON; metadata `headers` become NATS headers. Core NATS: each batch is flushed to the \
          server before it is acknowledged upstream (at-most-once: the server does not confirm). \
          With `stream`, it is a JetStream publish: each message carries a `Nats-Msg-Id` \
          (`msg_id`) and is acknowledged upstream only once the server's PubAck arrived; a \
          publish that timed out, lost its connection or met a full stream (`max_ack_pending`) \
          is kept and retried with the same id, with the `reconnect` backoff, until confirmed \
          (so the stream keeps one copy; logged once per episode); one the server refuses for \
          good (too large, a wrong expected sequence) goes to `err`. While NATS is down it takes \
          no input (back-pressure holds upstream) and reconnects for ever. At shutdown a wait \
          ends at once: what is not confirmed is rejected, not acknowledged.",
    kind: Kind::Sink,
    inputs: &[PortSpec { name: "in", ty: "any", doc: "messages to publish" }],
    outputs: &[],
    config: config_keys![
        KeySpec::required(
            "subject",
            KeyType::String,
            "The subject, a template: `results`, `sensors.{{ .sensor }}`, `out.{{ $meta.topic }}`.",
        ),
        KeySpec::optional(
            "stream",
            KeyType::String,
            "JetStream: publish into this stream (it must capture the subject) and wait for each \
             PubAck; at-least-once.",
        ),
        KeySpec::optional(
            "msg_id",
            KeyType::String,
            "JetStream: the `Nats-Msg-Id` template the server deduplicates on. Unset: \
             `<process id>-{{ $meta.source }}-{{ $meta.seq }}`, unique per message of this fbp process, \
             so a retried publish is stored once. Set it to a business key (`{{ .id }}`) to deduplicate \
             across processes too.",
        ),
        KeySpec::new(
            "create_stream",
            KeyType::Bool,
            "false",
            "JetStream: create `stream` capturing `subject` (which must then have no template) if it does \
             not exist.",
        ),
    ],
    delivery: Delivery::Depends(
        "core NATS is at-most-once (a batch is acknowledged once flushed to the server, which does not \
         confirm); with `stream` (JetStream) at-least-once: a message is acknowledged upstream only once \
         its PubAck arrived, and a retried publish keeps its `Nats-Msg-Id`",
    ),
    acks: Acks::Prompt,
    stateless: true,
    example: "[components.results]\ntype = \"nats-publish\"\nconfig = { url = \"nats://127.0.0.1:4222\", subject = \"results.{{ .sensor }}\" }\n",
    build,
    ports: None,
    probe: Some(super::connect::probe::PROBE),
};

/// Messages taken from the input at a time (published, then flushed once).
const BATCH: usize = 256;

/// Consecutive failed attempts after which a message whose subject no
/// stream captures goes to `err` rather than holding the flow.
const NO_STREAM_ATTEMPTS: u32 = 5;

#[derive(Deserialize)]
struct Config {
    subject: String,
    stream: Option<String>,
    msg_id: Option<String>,
    create_stream: bool,
    #[serde(flatten)]
    conn: ConnConfig,
}

struct Publisher {
    conn: Conn,
    subject: Template,
    /// The subject when it has no template (checked at build), shared by every message.
    static_subject: Option<Subject>,
    jetstream: Option<JetStream>,
}

struct JetStream {
    stream: String,
    msg_id: Option<Template>,
    create_subject: Option<String>,
}

fn build(ctx: &BuildContext) -> Result<Instance, String> {
    let c: Config = ctx.parse()?;
    let subject = Template::parse("subject", &c.subject)?;
    if subject.as_static().is_some_and(|s| s.is_empty() || s.contains(['*', '>']) || s.contains(char::is_whitespace)) {
        return Err(format!("`subject = \"{}\"`: publish to a subject without wildcards or spaces", c.subject));
    }
    let jetstream = match c.stream {
        None if c.msg_id.is_some() || c.create_stream => {
            return Err("`msg_id` and `create_stream` are for JetStream: set `stream` too".into());
        }
        None => None,
        Some(stream) => {
            let create_subject = match (c.create_stream, subject.as_static()) {
                (false, _) => None,
                (true, Some(s)) => Some(s.to_string()),
                (true, None) => {
                    return Err(
                        "`create_stream` needs a `subject` without `{{ }}`; create the stream beforehand".into()
                    );
                }
            };
            let msg_id = c.msg_id.as_deref().map(|t| Template::parse("msg_id", t)).transpose()?;
            Some(JetStream { stream, msg_id, create_subject })
        }
    };
    let static_subject = subject.as_static().map(Subject::from);
    Ok(Instance::task(Publisher { conn: Conn::new(&c.conn, ctx)?, subject, static_subject, jetstream }))
}

/// A nonce for this process, so default message ids never repeat across runs.
fn process_nonce() -> &'static str {
    static NONCE: OnceLock<String> = OnceLock::new();
    NONCE.get_or_init(|| format!("{:x}{:08x}", std::process::id(), fastrand::u32(..)))
}

impl Task for Publisher {
    fn run(self: Box<Self>, mut ctx: Context) -> TaskFuture {
        Box::pin(async move {
            let mut input = ctx.input("in");
            let mut conn = self.conn.connect(&ctx.name, REPLY_CAPACITY).await?;
            let refusal = conn.refusal();
            let work = async {
                match &self.jetstream {
                    None => self.core(&ctx, &mut input, &mut conn).await,
                    Some(js) => self.jetstream(&ctx, &mut input, &mut conn, js).await,
                }
            };
            let result = refusal.unless_refused(&ctx, work).await;
            // Every batch was flushed before it was dropped; a last flush only while connected
            // (disconnected there is no one to flush to, and it would wait out its time-out).
            if *conn.up.borrow() {
                let _ = tokio::time::timeout(std::time::Duration::from_secs(5), conn.client.flush()).await;
            }
            result
        })
    }
}

/// A message ready to go: its subject, headers (if any) and payload.
struct Outgoing {
    subject: Subject,
    headers: Option<HeaderMap>,
    payload: Bytes,
}

impl Publisher {
    /// Renders a message, or says why it cannot be published.
    fn render(&self, msg: &Message) -> Result<Outgoing, String> {
        let headers = if msg.meta.headers.is_empty() { None } else { Some(headers_out(&msg.meta.headers)?) };
        if let Some(subject) = &self.static_subject {
            return Ok(Outgoing { subject: subject.clone(), headers, payload: encode(&msg.payload) });
        }
        let subject = self.subject.render(msg).map_err(|e| format!("subject: {e}"))?;
        if subject.is_empty() || subject.contains(['*', '>']) || subject.contains(char::is_whitespace) {
            return Err(format!("subject `{subject}` is not a subject one can publish to"));
        }
        Ok(Outgoing { subject: subject.into(), headers, payload: encode(&msg.payload) })
    }

    /// Core NATS: publish a batch, flush it, then drop it.
    async fn core(&self, ctx: &Context, input: &mut InPort, conn: &mut Connection) -> Result<(), Failure> {
        let mut batch = Vec::with_capacity(BATCH);
        let client = conn.client.clone();
        loop {
            if !conn.wait_up(input).await? || !input.recv_many(&mut batch, BATCH).await {
                return Ok(());
            }
            for msg in &batch {
                // A publish error is this message's (too big, closed client: the next wait says).
                let sent = match self.render(msg) {
                    Ok(o) => publish(&client, o).await.map_err(|e| format!("publish: {e}")),
                    Err(e) => Err(e),
                };
                if let Err(e) = sent {
                    ctx.reject(msg, &e).await?;
                }
            }
            // Flushed to the server (waits through a reconnection) before acknowledging.
            if let Err(e) = client.flush().await {
                tracing::debug!(component = %ctx.name, error = %e, "Flush failed; the batch was at most once.");
            }
            batch.clear();
        }
    }

    /// JetStream: publish a batch, await the PubAcks, retry what failed.
    async fn jetstream(
        &self,
        ctx: &Context,
        input: &mut InPort,
        conn: &mut Connection,
        js: &JetStream,
    ) -> Result<(), Failure> {
        let context = jetstream::new(conn.client.clone());
        let mut link = Link::new(ctx.name.clone(), format!("jetstream stream {}", js.stream), conn.backoff);
        if let Some(subject) = &js.create_subject {
            self.create_stream(ctx, &context, js, subject, &mut link).await;
        }
        let mut retry = Retry::new(ctx.name.clone(), format!("jetstream stream {}", js.stream), conn.backoff);
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            if !conn.wait_up(input).await? || !input.recv_many(&mut batch, BATCH).await {
                return Ok(());
            }
            let mut todo: Vec<(Message, u32)> = batch.drain(..).map(|m| (m, 0)).collect();
            while !todo.is_empty() {
                let (mut failed, error) = self.attempt(ctx, &context, js, todo).await?;
                match error {
                    None => retry.written(),
                    Some(e) => {
                        if retry
                            .failed(Fault::Transient(format!("JetStream publish: {e}")), ctx.shutdown())
                            .await
                            .is_err()
                        {
                            // Not confirmed at shutdown: their sources learn they were not delivered.
                            failed.drain(..).for_each(|(m, _)| m.ack.iter().for_each(Ack::reject));
                        }
                    }
                }
                todo = failed;
            }
        }
    }

    /// One attempt at publishing `todo`: what failed and may be retried, and the last error.
    async fn attempt(
        &self,
        ctx: &Context,
        context: &jetstream::Context,
        js: &JetStream,
        todo: Vec<(Message, u32)>,
    ) -> Result<(Vec<(Message, u32)>, Option<String>), Failure> {
        let mut sent = Vec::with_capacity(todo.len());
        let mut failed = Vec::new();
        let mut error = None;
        for (msg, tries) in todo {
            let publish = match self.publish_js(&msg, js) {
                Ok(p) => p,
                Err(e) => {
                    ctx.reject(&msg, &e).await?;
                    continue;
                }
            };
            let (subject, publish) = publish;
            match context.send_publish(subject, publish).await {
                Ok(ack) => sent.push((msg, tries, ack)),
                Err(e) if retryable(e.kind(), tries) => {
                    error = Some(e.to_string());
                    failed.push((msg, tries + 1));
                }
                Err(e) => ctx.reject(&msg, &format!("JetStream publish: {e}")).await?,
            }
        }
        for (msg, tries, ack) in sent {
            match ack.await {
                Ok(_) => drop(msg),
                Err(e) if retryable(e.kind(), tries) => {
                    error = Some(e.to_string());
                    failed.push((msg, tries + 1));
                }
                Err(e) => ctx.reject(&msg, &format!("JetStream publish: {e}")).await?,
            }
        }
        Ok((failed, error))
    }

    fn publish_js(&self, msg: &Message, js: &JetStream) -> Result<(Subject, Publish), String> {
        let o = self.render(msg)?;
        let id = match &js.msg_id {
            Some(t) => t.render(msg).map_err(|e| format!("msg_id: {e}"))?,
            None => format!("{}-{}-{}", process_nonce(), msg.meta.source, msg.meta.seq),
        };
        let publish = Publish::build()
            .payload(o.payload)
            .headers(o.headers.unwrap_or_default())
            .message_id(id)
            .expected_stream(&js.stream);
        Ok((o.subject, publish))
    }

    async fn create_stream(
        &self,
        ctx: &Context,
        context: &jetstream::Context,
        js: &JetStream,
        subject: &str,
        link: &mut Link,
    ) {
        let config =
            stream::Config { name: js.stream.clone(), subjects: vec![subject.to_string()], ..Default::default() };
        loop {
            match context.get_or_create_stream(config.clone()).await {
                Ok(_) => return link.up(),
                Err(e) => {
                    let delay = link.down(&format!("cannot create stream `{}`: {e}", js.stream));
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = ctx.shutdown().cancelled() => return,
                    }
                }
            }
        }
    }
}

/// Whether a failed JetStream publish is worth another attempt: yes for
/// time-outs and lost connections; a subject no stream captures for a few
/// attempts (the server may be starting); no for what will fail again.
fn retryable(kind: PublishErrorKind, tries: u32) -> bool {
    match kind {
        PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe | PublishErrorKind::MaxAckPending => true,
        PublishErrorKind::StreamNotFound => tries + 1 < NO_STREAM_ATTEMPTS,
        PublishErrorKind::WrongLastMessageId
        | PublishErrorKind::WrongLastSequence
        | PublishErrorKind::MaxPayloadExceeded
        | PublishErrorKind::Other => false,
    }
}

async fn publish(client: &Client, o: Outgoing) -> Result<(), async_nats::PublishError> {
    match o.headers {
        None => client.publish(o.subject, o.payload).await,
        Some(headers) => client.publish_with_headers(o.subject, headers, o.payload).await,
    }
}
