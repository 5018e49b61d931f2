//! `nats-subscribe`: messages from NATS subjects, core or JetStream.
//!
//! Core: one subscription per subject (in a queue group if asked); at
//! shutdown the subscriptions are drained, so what the server already sent
//! is still delivered. JetStream: a durable pull consumer with explicit
//! acks; each message is acknowledged when the flow reports it delivered,
//! and negatively acknowledged (redelivered after a pause) when rejected. At
//! shutdown it stops pulling and waits for the acknowledgements of what is
//! in flight before it closes the connection.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::message::{AckKind, Acker};
use async_nats::jetstream::{self, stream};
use fbp_runtime::link::Link;
use fbp_runtime::queue::OutPort;
use fbp_runtime::spec::{KeySpec, KeyType, Port};
use fbp_runtime::units::{parse_duration, positive_size};
use fbp_runtime::{
    BuildContext, ComponentSpec, Context, Delivery, Failure, Instance, Kind, Message, Outcome, PortSpec, Task,
    TaskFuture,
};
use futures_util::{FutureExt, StreamExt};
use serde::Deserialize;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use super::connect::{Conn, ConnConfig, Connection, config_keys};
use super::{Format, headers_in, undecoded};
use crate::net::budget::{self, STALL, Stall};

/// The `nats-subscribe` declaration.
pub static SPEC: ComponentSpec = ComponentSpec {
    name: "nats-subscribe",
    summary: "Receive messages from NATS subjects (core, queue groups, JetStream durable consumers).",
    doc: "Subscribes to `subject` (or `subjects`, wildcards `*` and `>` allowed) and emits each \
          message with the subject in `topic` and the NATS headers in `headers`. With \
          `queue_group`, the instances in the group share the messages (each goes to one of \
          them): run several `fbp` processes with the same group to spread the load. With `stream` \
          and `durable`, it reads a JetStream durable pull consumer (created if missing, with \
          `deliver` for where a new one starts) and acknowledges each message only when the flow \
          has delivered it (every sink committed it, or it was dead-lettered); a rejected message \
          is negatively acknowledged and redelivered after a second. The consumer keeps its place \
          across restarts; several processes with the same `durable` share it. A payload that does \
          not decode in `format`, or one over `max_payload_size`, goes to `err` (and is \
          acknowledged once dead-lettered); the rest flows. The flow \
          starts while NATS is down; the connection is retried for ever and logged once per \
          change. When a JetStream consumer's unacknowledged messages stay so for 3 s with nothing \
          coming in or going out (`max_ack_pending` reached), it warns once, naming the component \
          downstream that holds them, and again only after it recovered.",
    kind: Kind::Source,
    inputs: &[],
    outputs: &[PortSpec { name: "out", ty: "json", doc: "the messages (type from `format`)" }],
    config: config_keys![
        KeySpec::optional("subject", KeyType::String, "The subject, e.g. `sensors.>` or `sensors.*.temp`."),
        KeySpec::optional("subjects", KeyType::StringList, "Several subjects (instead of `subject`)."),
        KeySpec::optional(
            "queue_group",
            KeyType::String,
            "Core NATS: join this queue group; each message goes to one member.",
        ),
        KeySpec::new(
            "format",
            KeyType::Enum(&["json", "text", "bytes", "auto"]),
            "\"json\"",
            "How to read payloads: `json` (else `err`), `text` (UTF-8, else `err`), `bytes`, or `auto` \
             (JSON, else text, else bytes).",
        ),
        KeySpec::new(
            "pending_limit",
            KeyType::Integer,
            "65536",
            "Core NATS: messages the client holds, per subject, until the flow takes them; past it the \
             server's messages are dropped (\"slow consumer\": counted in `dropped`, warned about once \
             when an episode starts and once when it ends). It absorbs bursts faster than \
             the flow: memory is bounded by about this many payloads (65 536 readings of 120 bytes: \
             ~18 MiB; of 1 KiB: ~75 MiB).",
        ),
        KeySpec::optional(
            "stream",
            KeyType::String,
            "JetStream: the stream to read (with `durable`); at-least-once delivery.",
        ),
        KeySpec::optional("durable", KeyType::String, "JetStream: the durable consumer's name."),
        KeySpec::new(
            "deliver",
            KeyType::Enum(&["all", "new"]),
            "\"all\"",
            "JetStream: where a new durable consumer starts, at the stream's first message or only new \
             ones. An existing consumer keeps its place.",
        ),
        KeySpec::new(
            "create_stream",
            KeyType::Bool,
            "false",
            "JetStream: create the stream, capturing the subjects, if it does not exist. Off by default, \
             so a typo does not make a stream; without it a missing stream is retried with a warning.",
        ),
        KeySpec::new(
            "max_ack_pending",
            KeyType::Integer,
            "1000",
            "JetStream: at most this many messages delivered and not yet acknowledged (bounds memory).",
        ),
        KeySpec::new("batch", KeyType::Integer, "100", "JetStream: messages asked for per pull request."),
        KeySpec::new(
            "max_payload_size",
            KeyType::String,
            "\"8MiB\"",
            "The largest payload taken in, as a size. A bigger message is a message error: it goes to `err` \
             as `{subject, size, limit}` (its payload left out) and, from JetStream, is acknowledged once \
             dead-lettered. What the client reads is bounded by the server's `max_payload` (1 MB by \
             default), not by this: async-nats reads a whole message before handing it over.",
        ),
        KeySpec::new(
            "ack_wait",
            KeyType::Duration,
            "\"30s\"",
            "JetStream: a message not acknowledged within this time is redelivered (also after a crash). \
             One a component downstream holds for half of it is reported in progress (`+WPI`), so it \
             is not delivered again while held.",
        ),
    ],
    delivery: Delivery::Depends(
        "core NATS is at-most-once (a message in flight when the process dies is lost; a queue group \
         loses nothing only on a graceful stop); with `stream` and `durable` (JetStream) at-least-once: \
         a message is acknowledged only once delivered, and redelivered after a crash",
    ),
    acks: fbp_runtime::spec::Acks::Budget {
        limit: "JetStream: the server sends at most `max_ack_pending` messages not yet acknowledged, then \
                waits, and delivers again a message neither acknowledged nor reported in progress within \
                `ack_wait` (fbp reports each held message in progress every half `ack_wait`): a \
                component downstream that holds acknowledgements stalls the consumer at `max_ack_pending`",
        bounded: |config| config.get("durable").is_some_and(|d| !d.is_null()),
    },
    stateless: false,
    example: "[components.readings]\ntype = \"nats-subscribe\"\nconfig = { url = \"nats://127.0.0.1:4222\", subject = \"sensors.>\", queue_group = \"workers\" }\n",
    build,
    ports: Some(ports),
    probe: Some(super::connect::probe::PROBE),
};

/// How long a rejected JetStream message waits before it is redelivered.
const NAK_DELAY: Duration = Duration::from_secs(1);
/// How long a shutdown waits for the messages in flight before it lets the
/// task end and acknowledges the rest in the background.
const SETTLE_WAIT: Duration = Duration::from_secs(5);

#[derive(Deserialize)]
struct Config {
    subject: Option<String>,
    subjects: Option<Vec<String>>,
    queue_group: Option<String>,
    format: Format,
    pending_limit: i64,
    stream: Option<String>,
    durable: Option<String>,
    deliver: String,
    create_stream: bool,
    max_ack_pending: i64,
    batch: i64,
    ack_wait: String,
    max_payload_size: String,
    #[serde(flatten)]
    conn: ConnConfig,
}

fn ports(config: &serde_json::Value) -> (Vec<Port>, Vec<Port>) {
    let format = config.get("format").cloned().and_then(|f| serde_json::from_value(f).ok()).unwrap_or(Format::Json);
    (Vec::new(), vec![Port { name: "out".into(), ty: format.port_type().into() }])
}

/// A JetStream durable consumer's settings.
#[derive(Debug, Clone)]
struct Durable {
    stream: String,
    name: String,
    deliver: DeliverPolicy,
    create_stream: bool,
    max_ack_pending: i64,
    batch: usize,
    ack_wait: Duration,
}

struct Subscribe {
    conn: Conn,
    subjects: Vec<String>,
    queue_group: Option<String>,
    format: Format,
    pending_limit: usize,
    durable: Option<Durable>,
    /// The largest payload taken in, in bytes.
    max_payload: usize,
}

fn build(ctx: &BuildContext) -> Result<Instance, String> {
    let c: Config = ctx.parse()?;
    let subjects = match (c.subject, c.subjects) {
        (Some(s), None) => vec![s],
        (None, Some(list)) if !list.is_empty() => list,
        (Some(_), Some(_)) => return Err("give `subject` or `subjects`, not both".into()),
        _ => return Err("no subject; set `subject = \"sensors.>\"` (or `subjects = [..]`)".into()),
    };
    for s in &subjects {
        check_subject(s)?;
    }
    let durable = match (c.stream, c.durable) {
        (None, None) => None,
        (Some(stream), Some(name)) => {
            if c.queue_group.is_some() {
                return Err("`queue_group` is for core NATS; JetStream processes share a `durable` instead".into());
            }
            Some(Durable {
                stream,
                name,
                deliver: if c.deliver == "new" { DeliverPolicy::New } else { DeliverPolicy::All },
                create_stream: c.create_stream,
                max_ack_pending: positive("max_ack_pending", c.max_ack_pending)? as i64,
                batch: positive("batch", c.batch)?,
                ack_wait: parse_duration(&c.ack_wait)?,
            })
        }
        (Some(_), None) => return Err("`stream` needs `durable` (the consumer's name)".into()),
        (None, Some(_)) => return Err("`durable` needs `stream`".into()),
    };
    Ok(Instance::task(Subscribe {
        conn: Conn::new(&c.conn, ctx)?,
        subjects,
        queue_group: c.queue_group,
        format: c.format,
        pending_limit: positive("pending_limit", c.pending_limit)?,
        durable,
        max_payload: positive_size("max_payload_size", &c.max_payload_size)?,
    }))
}

fn positive(key: &str, n: i64) -> Result<usize, String> {
    usize::try_from(n).ok().filter(|n| *n > 0).ok_or_else(|| format!("`{key}` must be at least 1, found {n}"))
}

fn check_subject(s: &str) -> Result<(), String> {
    let bad = s.is_empty()
        || s.contains(char::is_whitespace)
        || s.split('.').any(|t| t.is_empty() || (t.len() > 1 && (t.contains('*') || t.contains('>'))))
        || s.split('.').rev().skip(1).any(|t| t == ">");
    if bad {
        return Err(format!("`{s}` is not a NATS subject: tokens separated by dots, `*` for one token, `>` last"));
    }
    Ok(())
}

impl Task for Subscribe {
    fn run(self: Box<Self>, ctx: Context) -> TaskFuture {
        Box::pin(async move {
            let conn = self.conn.connect(&ctx.name, self.pending_limit).await?;
            let out = ctx.output("out");
            let refusal = conn.refusal();
            let work = async {
                match &self.durable {
                    None => self.core(&ctx, &out, conn).await,
                    Some(d) => self.jetstream(&ctx, &out, conn, d).await,
                }
            };
            refusal.unless_refused(&ctx, work).await
        })
    }
}

impl Subscribe {
    /// Core NATS: subscribe, emit, and drain at shutdown.
    async fn core(&self, ctx: &Context, out: &OutPort, conn: Connection) -> Result<(), Failure> {
        let client = &conn.client;
        let mut subs = Vec::new();
        for s in &self.subjects {
            let sub = match &self.queue_group {
                Some(q) => client.queue_subscribe(s.clone(), q.clone()).await,
                None => client.subscribe(s.clone()).await,
            };
            subs.push(sub.map_err(|e| Failure(format!("{}: cannot subscribe to `{s}`: {e}", conn.target)))?);
        }
        let mut merged = Merged { subs, next: 0 };
        let mut batch = Batch::default();
        let mut draining = false;
        let mut up = conn.up.clone();
        let (mut drops, mut pulled) = (Drops::default(), 0u64);
        loop {
            tokio::select! {
                m = merged.next() => match m {
                    Some(m) => {
                        // Take what the client already holds, then send it on in one go.
                        let mut next = Some(m);
                        while let Some(m) = &mut next {
                            pulled += 1;
                            if let Some((msg, e)) = self.take(ctx, &mut batch, m, None) {
                                ctx.reject(&msg, &e).await?;
                            }
                            next = match batch.full() {
                                true => None,
                                false => match merged.next().now_or_never() {
                                    Some(m) => m,
                                    None => {
                                        drops.count(ctx, &conn, pulled, false);
                                        None
                                    }
                                },
                            };
                        }
                        batch.send(out).await?;
                    }
                    None => break,
                },
                () = drops.quiet(), if drops.in_episode() => drops.over(ctx),
                _ = ctx.shutdown().cancelled(), if !draining => {
                    // Unsubscribe, but deliver what the server already sent.
                    draining = true;
                    for sub in &mut merged.subs {
                        let _ = sub.drain().await;
                    }
                }
                // Disconnected, a drain cannot complete: stop (also when the server
                // goes away during the drain, say both were stopped at once).
                _ = async { drop(up.wait_for(|up| !*up).await) }, if draining => break,
            }
        }
        // Drained: whatever the client took in and the flow did not get was dropped.
        drops.count(ctx, &conn, pulled, true);
        drops.over(ctx);
        Ok(())
    }

    /// JetStream: a durable pull consumer, acknowledged as the flow delivers.
    async fn jetstream(&self, ctx: &Context, out: &OutPort, conn: Connection, d: &Durable) -> Result<(), Failure> {
        let js = jetstream::new(conn.client.clone());
        let mut setup = Link::new(ctx.name.clone(), format!("jetstream {}/{}", d.stream, d.name), conn.backoff);
        let acks = Acks::start();
        let mut batch = Batch::default();
        let mut watch = Watch { stall: Stall::new(STALL, Instant::now()), settled: 0 };
        let mut look = tokio::time::interval(Duration::from_secs(1));
        look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Messages a component holds for half of `ack_wait` are reported in
        // progress (`+WPI`), so JetStream does not deliver them again meanwhile.
        let mut progress = tokio::time::interval(progress_every(d.ack_wait));
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        'outer: loop {
            let consumer = tokio::select! {
                c = self.consumer(&js, d) => c,
                _ = ctx.shutdown().cancelled() => break 'outer,
            };
            let mut messages = match consumer {
                Ok(c) => match c.stream().max_messages_per_batch(d.batch).messages().await {
                    Ok(m) => m,
                    Err(e) => {
                        self.pause(ctx, &mut setup, &e).await;
                        continue;
                    }
                },
                Err(e) => {
                    self.pause(ctx, &mut setup, &e).await;
                    continue;
                }
            };
            setup.up();
            loop {
                tokio::select! {
                    _ = look.tick() => watch.look(ctx, &acks),
                    _ = progress.tick() => acks.in_progress(&conn.client, d.ack_wait / 2).await,
                    m = messages.next() => match m {
                        Some(Ok(m)) => {
                            watch.arrived(ctx, &acks);
                            let reply = m.reply.clone();
                            let (mut m, acker) = m.split();
                            let ack = acks.ack(ctx, acker, reply);
                            if let Some((msg, e)) = self.take(ctx, &mut batch, &mut m, Some(ack)) {
                                ctx.reject(&msg, &e).await?;
                            }
                            batch.send(out).await?;
                        }
                        Some(Err(e)) => {
                            tracing::debug!(component = %ctx.name, error = %e, "JetStream pull error; continuing.");
                            if matches!(e.kind(), pull::MessagesErrorKind::ConsumerDeleted | pull::MessagesErrorKind::NoResponders) {
                                self.pause(ctx, &mut setup, &e).await;
                                continue 'outer;
                            }
                        }
                        None => continue 'outer,
                    },
                    _ = ctx.shutdown().cancelled() => break 'outer,
                }
            }
        }
        // A component that holds messages until its input ends (a window with
        // `ack = "on_emit"`) lets them go only once this task has ended: past
        // SETTLE_WAIT the rest are acknowledged in the background as they drain.
        if tokio::time::timeout(SETTLE_WAIT, acks.settled()).await.is_ok() {
            acks.finish(&conn).await;
        } else {
            tokio::spawn(async move { acks.finish(&conn).await });
        }
        Ok(())
    }

    /// The durable consumer, making the stream first if allowed.
    async fn consumer(&self, js: &jetstream::Context, d: &Durable) -> Result<PullConsumer, String> {
        let stream = match js.get_stream(&d.stream).await {
            Ok(s) => s,
            Err(e) if d.create_stream && matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(_)) => js
                .get_or_create_stream(stream::Config {
                    name: d.stream.clone(),
                    subjects: self.subjects.clone(),
                    ..Default::default()
                })
                .await
                .map_err(|e| format!("cannot create stream `{}`: {e}", d.stream))?,
            Err(e) => return Err(format!("stream `{}`: {e}", d.stream)),
        };
        let filter_subject = match self.subjects.as_slice() {
            [one] => one.clone(),
            _ => String::new(),
        };
        let config = pull::Config {
            durable_name: Some(d.name.clone()),
            ack_policy: AckPolicy::Explicit,
            deliver_policy: d.deliver,
            max_ack_pending: d.max_ack_pending,
            ack_wait: d.ack_wait,
            filter_subject,
            ..Default::default()
        };
        stream
            .get_or_create_consumer(&d.name, config)
            .await
            .map_err(|e| format!("consumer `{}` on stream `{}`: {e}", d.name, d.stream))
    }

    /// Logs a setup problem (once per outage) and waits the backoff.
    async fn pause(&self, ctx: &Context, link: &mut Link, error: &(dyn std::fmt::Display + Sync)) {
        let delay = link.down(error);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = ctx.shutdown().cancelled() => {}
        }
    }

    /// Decodes a NATS message into `batch`, taking its payload; a message
    /// that does not decode, or is over `max_payload_size`, comes back with
    /// the reason, for `err`. (Not
    /// `async`, and the client's message is borrowed: the client's message,
    /// some 200 bytes, is not copied into a future or a frame per message.)
    fn take(
        &self,
        ctx: &Context,
        batch: &mut Batch,
        m: &mut async_nats::Message,
        ack: Option<fbp_runtime::Ack>,
    ) -> Option<(Message, String)> {
        let mut meta = ctx.meta_at(batch.read_at());
        meta.topic = Some(batch.topic(&m.subject));
        meta.headers = headers_in(m.headers.as_ref());
        let payload = std::mem::take(&mut m.payload);
        if payload.len() > self.max_payload {
            let (about, error) = oversized(m.subject.as_str(), payload.len(), self.max_payload);
            return Some((Message { payload: about, meta: Arc::new(meta), ack }, error));
        }
        match self.format.decode(payload) {
            Ok(payload) => {
                batch.messages.push(Message { payload, meta: Arc::new(meta), ack });
                None
            }
            Err((e, raw)) => Some((Message { payload: undecoded(raw), meta: Arc::new(meta), ack }, e)),
        }
    }
}

/// What `err` gets for a payload of `size` bytes over `limit` on `subject`
/// (the payload left out), and the error.
fn oversized(subject: &str, size: usize, limit: usize) -> (fbp_runtime::value::Value, String) {
    use fbp_runtime::value::{int, object, string};
    let n = |x: usize| int(i64::try_from(x).unwrap_or(i64::MAX));
    let about = object([("subject", string(subject)), ("size", n(size)), ("limit", n(limit))]);
    (about, format!("payload of {size} bytes on `{subject}` is over `max_payload_size` ({limit} bytes)"))
}

/// Core NATS: the messages the client dropped because the flow fell behind
/// (a full subscription, "slow consumer"), counted in `dropped` and warned
/// about once per episode, at its start and with its count at its end.
#[derive(Default)]
struct Drops {
    counted: u64,
    /// While dropping: the count when it began, and when it last grew.
    episode: Option<(u64, Instant)>,
}

/// Messages the client may have read and not yet handed to a subscription.
const IN_FLIGHT: u64 = 1024;

impl Drops {
    /// How long without a new drop ends an episode.
    const QUIET: Duration = Duration::from_secs(5);

    /// Counts what the client says it dropped; once `drained` (nothing is
    /// left in the client to deliver), every message it took in and the flow
    /// did not get, which covers drops it could not report.
    fn count(&mut self, ctx: &Context, conn: &Connection, pulled: u64, drained: bool) {
        let reported = conn.slow.load(Ordering::Relaxed);
        if reported == 0 {
            return;
        }
        let taken = conn.client.statistics().in_messages.load(Ordering::Relaxed);
        // The client counts a message as it reads it, a little before it is
        // in the subscription (or dropped): while messages come, allow for
        // those. The client reports at most 128 drops at a time.
        let unseen = taken.saturating_sub(pulled);
        let dropped = reported.max(if drained { unseen } else { unseen.saturating_sub(IN_FLIGHT) });
        if dropped <= self.counted {
            return;
        }
        ctx.metrics().dropped.fetch_add(dropped - self.counted, Ordering::Relaxed);
        if drained {
            self.counted = dropped;
            return;
        }
        if self.episode.is_none() {
            tracing::warn!(
                component = %ctx.name,
                dropped = dropped - self.counted,
                "NATS slow consumer: the flow is slower than the subject and core NATS drops what \
                 overflows `pending_limit`; counted in `dropped` (JetStream loses nothing)."
            );
        }
        let start = self.episode.map_or(self.counted, |(start, _)| start);
        (self.counted, self.episode) = (dropped, Some((start, Instant::now())));
    }

    fn in_episode(&self) -> bool {
        self.episode.is_some()
    }

    /// Resolves once the episode has been quiet for [`Drops::QUIET`].
    async fn quiet(&self) {
        if let Some((_, last)) = self.episode {
            tokio::time::sleep_until(last + Self::QUIET).await;
        }
    }

    /// The episode is over: say how many it dropped.
    fn over(&mut self, ctx: &Context) {
        if let Some((start, _)) = self.episode.take() {
            tracing::warn!(
                component = %ctx.name,
                dropped = self.counted - start,
                "NATS slow consumer: no longer dropping (the run summary has the exact count)."
            );
        }
    }
}

/// The subscriptions, read in turn, starting after the last one that gave a
/// message. (`select_all` re-queues each subscription as a boxed future per
/// message and moves every message through it: a sixth of a relay's CPU.)
struct Merged {
    subs: Vec<async_nats::Subscriber>,
    next: usize,
}

impl futures_util::Stream for Merged {
    type Item = async_nats::Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Option<Self::Item>> {
        let n = self.subs.len();
        let mut ended = 0;
        for k in 0..n {
            let i = (self.next + k) % n;
            match self.subs[i].poll_next_unpin(cx) {
                Poll::Ready(Some(m)) => {
                    self.next = (i + 1) % n;
                    return Poll::Ready(Some(m));
                }
                Poll::Ready(None) => ended += 1,
                Poll::Pending => {}
            }
        }
        if ended == n { Poll::Ready(None) } else { Poll::Pending }
    }
}

/// Messages taken from the client at a time, before they are sent on.
const BATCH: usize = 256;

/// Decoded messages waiting to be sent on, the last subject seen (its
/// `Arc<str>` is shared by the messages of the same subject), and when the
/// batch was read (the ingest time of all its messages).
#[derive(Default)]
struct Batch {
    messages: Vec<Message>,
    subject: Option<(async_nats::Subject, Arc<str>)>,
    read_at: Option<SystemTime>,
}

impl Batch {
    fn read_at(&mut self) -> SystemTime {
        *self.read_at.get_or_insert_with(SystemTime::now)
    }

    fn full(&self) -> bool {
        self.messages.len() >= BATCH
    }

    fn topic(&mut self, subject: &async_nats::Subject) -> Arc<str> {
        match &self.subject {
            Some((s, topic)) if s == subject => topic.clone(),
            _ => {
                let topic: Arc<str> = subject.as_str().into();
                self.subject = Some((subject.clone(), topic.clone()));
                topic
            }
        }
    }

    async fn send(&mut self, out: &OutPort) -> Result<(), Failure> {
        self.read_at = None;
        out.send_all(self.messages.drain(..)).await.map_err(Failure::from)
    }
}

/// Whether the messages JetStream left with us stay unacknowledged.
struct Watch {
    stall: Stall,
    /// Acknowledgements sent, at the last look.
    settled: u64,
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The broker's bound, as the warning names it.
const JETSTREAM_LIMIT: &str = "the consumer's `max_ack_pending`, and `ack_wait` before it delivers them again";

impl Watch {
    /// A look, once a second: acknowledgements sent since the last one are progress.
    fn look(&mut self, ctx: &Context, acks: &Acks) {
        let settled = acks.settled.load(Ordering::Acquire);
        if settled != self.settled {
            self.settled = settled;
            self.arrived(ctx, acks);
        }
        let held = acks.pending.load(Ordering::Acquire);
        if let Some(change) = self.stall.look(Instant::now(), held) {
            budget::log(ctx, change, held, JETSTREAM_LIMIT);
        }
    }

    /// A message came in, or some were acknowledged.
    fn arrived(&mut self, ctx: &Context, acks: &Acks) {
        if let Some(change) = self.stall.moved(Instant::now()) {
            budget::log(ctx, change, acks.pending.load(Ordering::Acquire), JETSTREAM_LIMIT);
        }
    }
}

/// How often to look for messages held long enough to report in progress.
fn progress_every(ack_wait: Duration) -> Duration {
    (ack_wait / 4).max(Duration::from_millis(50))
}

/// A message delivered and not yet acknowledged: where to report progress,
/// and since when it has gone unreported.
struct Held {
    reply: async_nats::Subject,
    since: Instant,
}

/// Acknowledgements to send to JetStream, from whichever task drops a
/// message's last copy, and the count of those not sent yet.
struct Acks {
    tx: mpsc::UnboundedSender<(Outcome, Acker)>,
    pending: Arc<AtomicUsize>,
    /// The messages in flight, by arrival (bounded by `max_ack_pending`).
    held: Arc<std::sync::Mutex<std::collections::BTreeMap<u64, Held>>>,
    next: AtomicU64,
    /// Acknowledgements sent so far.
    settled: Arc<AtomicU64>,
    done: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Acks {
    fn start() -> Acks {
        let (tx, mut rx) = mpsc::unbounded_channel::<(Outcome, Acker)>();
        let pending = Arc::new(AtomicUsize::new(0));
        let settled = Arc::new(AtomicU64::new(0));
        let done = Arc::new(Notify::new());
        let (p, n, s) = (pending.clone(), done.clone(), settled.clone());
        let task = tokio::spawn(async move {
            while let Some((outcome, acker)) = rx.recv().await {
                let kind = match outcome {
                    Outcome::Delivered => AckKind::Ack,
                    Outcome::Rejected => AckKind::Nak(Some(NAK_DELAY)),
                };
                if let Err(e) = acker.ack_with(kind).await {
                    tracing::debug!(error = %e, "JetStream ack not sent; the message will be redelivered.");
                }
                s.fetch_add(1, Ordering::AcqRel);
                if p.fetch_sub(1, Ordering::AcqRel) == 1 {
                    n.notify_waiters();
                }
            }
        });
        let held = Arc::default();
        Acks { tx, pending, held, next: AtomicU64::new(0), settled, done, task }
    }

    /// The flow's acknowledgement for a message, sending the broker's when it
    /// is done; until then the message can be reported in progress on `reply`.
    fn ack(&self, ctx: &Context, acker: Acker, reply: Option<async_nats::Subject>) -> fbp_runtime::Ack {
        self.pending.fetch_add(1, Ordering::AcqRel);
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        if let Some(reply) = reply {
            lock(&self.held).insert(id, Held { reply, since: Instant::now() });
        }
        let (tx, held) = (self.tx.clone(), self.held.clone());
        let acker = std::sync::Mutex::new(Some(acker));
        ctx.ack(move |outcome| {
            lock(&held).remove(&id);
            if let Some(a) = acker.lock().unwrap_or_else(|p| p.into_inner()).take() {
                let _ = tx.send((outcome, a));
            }
        })
    }

    /// Reports in progress every message held unreported for `after` or
    /// longer, so that JetStream waits another `ack_wait` before it would
    /// deliver it again.
    async fn in_progress(&self, client: &async_nats::Client, after: Duration) {
        let now = Instant::now();
        let due: Vec<async_nats::Subject> = lock(&self.held)
            .values_mut()
            .filter(|h| now.duration_since(h.since) >= after)
            .map(|h| {
                h.since = now;
                h.reply.clone()
            })
            .collect();
        for reply in due {
            if let Err(e) = client.publish(reply, AckKind::Progress.into()).await {
                tracing::debug!(error = %e, "JetStream progress not sent; the message may be delivered again.");
            }
        }
    }

    /// Waits until every message in flight is acknowledged.
    async fn settled(&self) {
        loop {
            let notified = self.done.notified();
            if self.pending.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Waits until every message in flight is acknowledged (the network
    /// bounds this by its shutdown timeout), then flushes the acks out.
    async fn finish(self, conn: &Connection) {
        self.settled().await;
        drop(self.task);
        let _ = tokio::time::timeout(Duration::from_secs(5), conn.client.flush()).await;
    }
}
