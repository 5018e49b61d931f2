//! `batch`: group messages into arrays, by size or after a timeout.
//!
//! `Batcher` holds the messages of the open batch and says when it is due;
//! `run` feeds it from the input and sends what it closes.

use std::sync::Arc;
use std::time::Duration;

use fbp_runtime::queue::{InPort, OutPort};
use fbp_runtime::spec::{KeySpec, KeyType, config_duration};
use fbp_runtime::{
    Ack, Acks, BuildContext, ComponentSpec, Context, Delivery, Failure, Instance, Kind, Message, Meta, PortSpec, Task,
    TaskFuture, Value,
};
use serde::Deserialize;
use tokio::time::Instant;

use super::timer::{BATCH, capped, sleep_until};

/// The `batch` declaration.
pub static SPEC: ComponentSpec = ComponentSpec {
    name: "batch",
    summary: "Group messages into one message holding an array of their payloads.",
    doc: "Collects messages and sends them as one message whose payload is the array of their \
          payloads, in arrival order: when `size` messages are held, or `timeout` after the \
          first message of a partial batch, whichever comes first. What is held when the input \
          ends is sent at once. A batch has fresh metadata (`source` is this component); its \
          `topic` is its messages' when they all share one. It carries its inputs' \
          acknowledgements: they are acknowledged when the batch is.",
    kind: Kind::Transform,
    inputs: &[PortSpec { name: "in", ty: "any", doc: "messages to group" }],
    outputs: &[PortSpec { name: "out", ty: "array", doc: "arrays of at most `size` payloads, in arrival order" }],
    config: &[
        KeySpec::new(
            "size",
            KeyType::Integer,
            "100",
            "Most messages in a batch (at least 1); a full batch is sent at once.",
        ),
        KeySpec::new(
            "timeout",
            KeyType::Duration,
            "\"1s\"",
            "How long a partial batch may wait, from its first message; `\"0s\"` sends what has \
             arrived without waiting for more.",
        ),
    ],
    delivery: Delivery::PassThrough,
    acks: Acks::Holds {
        when: "carries its inputs' acknowledgements on the batch: a message is acknowledged once its batch \
               is, up to `timeout` after the batch's first message plus the time downstream takes",
        hold: |config| config_duration(config, "timeout").filter(|t| !t.is_zero()),
        fix: "shorten `timeout`, or lower `size`",
    },
    stateless: false,
    example: "[components.group]\ntype = \"batch\"\nconfig = { size = 500, timeout = \"200ms\" }\n",
    build,
    ports: None,
    probe: None,
};

#[derive(Deserialize)]
struct Config {
    size: i64,
    #[serde(deserialize_with = "fbp_runtime::units::duration")]
    timeout: Duration,
}

fn build(ctx: &BuildContext) -> Result<Instance, String> {
    let config: Config = ctx.parse()?;
    let size = usize::try_from(config.size).ok().filter(|&n| n > 0).ok_or("`size` must be at least 1")?;
    Ok(Instance::task(Batcher::new(size, capped(config.timeout))))
}

impl Task for Batcher {
    fn run(self: Box<Self>, mut ctx: Context) -> TaskFuture {
        Box::pin(async move {
            let (input, out) = (ctx.input("in"), ctx.output("out"));
            run(*self, input, out, || ctx.meta()).await
        })
    }
}

/// The open batch.
struct Batcher {
    size: usize,
    timeout: Duration,
    held: Vec<Message>,
    /// When the open batch must go: `timeout` after its first message.
    due: Option<Instant>,
}

impl Batcher {
    fn new(size: usize, timeout: Duration) -> Self {
        Batcher { size, timeout, held: Vec::new(), due: None }
    }

    /// Adds a message that arrived at `now`; the batch it completes, if any.
    fn add(&mut self, msg: Message, now: Instant) -> Option<Vec<Message>> {
        self.due.get_or_insert(now + self.timeout);
        self.held.push(msg);
        (self.held.len() >= self.size).then(|| self.take()).flatten()
    }

    /// Closes the open batch; `None` when it is empty.
    fn take(&mut self) -> Option<Vec<Message>> {
        self.due = None;
        (!self.held.is_empty()).then(|| std::mem::take(&mut self.held))
    }
}

enum Event {
    /// The open batch is due.
    Due,
    /// Messages arrived (`true`) or the input ended (`false`).
    Input(bool),
}

/// Batches the input until it ends, then sends what is left.
async fn run(mut b: Batcher, mut input: InPort, out: OutPort, meta: impl Fn() -> Meta) -> Result<(), Failure> {
    let mut buf = Vec::with_capacity(BATCH);
    loop {
        let room = (b.size - b.held.len()).min(BATCH);
        let event = tokio::select! {
            biased;
            () = sleep_until(b.due) => Event::Due,
            more = input.recv_many(&mut buf, room) => Event::Input(more),
        };
        if let Event::Due = event {
            send(b.take(), &out, &meta).await?;
        }
        let now = Instant::now();
        for msg in buf.drain(..) {
            send(b.add(msg, now), &out, &meta).await?;
        }
        if let Event::Input(false) = event {
            return send(b.take(), &out, &meta).await;
        }
    }
}

async fn send(batch: Option<Vec<Message>>, out: &OutPort, meta: &impl Fn() -> Meta) -> Result<(), Failure> {
    match batch {
        Some(batch) => out.send(merge(batch, meta())).await.map_err(Failure::from),
        None => Ok(()),
    }
}

/// One message holding the payloads of `msgs` and their acknowledgements.
fn merge(msgs: Vec<Message>, mut meta: Meta) -> Message {
    meta.topic = common_topic(&msgs);
    let payload: Value = msgs.iter().map(|m| m.payload.clone()).collect();
    let mut batch = Message::new(payload, meta);
    batch.ack = Ack::merge(msgs.into_iter().filter_map(|m| m.ack).collect());
    batch
}

/// The topic every message shares, if they share one.
fn common_topic(msgs: &[Message]) -> Option<Arc<str>> {
    let first = msgs.first()?.meta.topic.clone()?;
    msgs.iter().all(|m| m.meta.topic.as_ref() == Some(&first)).then_some(first)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use fbp_runtime::testing::Harness;
    use fbp_runtime::{Ack, Message, Meta, Outcome, value};
    use serde_json::json;
    use tokio::time::Instant;

    use super::{Batcher, run};
    use crate::transform::timer::wires::Wires;

    fn meta() -> Meta {
        Meta::new("batch".into(), 0)
    }

    #[tokio::test]
    async fn full_batches_go_at_once_and_the_rest_when_input_ends() {
        let mut h = Harness::new(&super::SPEC, json!({"size": 2, "timeout": "1h"}));
        for v in 1..=5 {
            h.push_json(&v.to_string());
        }
        let out = h.run_to_end().await;
        assert!(matches!(out.result, Some(Ok(()))));
        assert_eq!(out.json("out"), ["[1,2]", "[3,4]", "[5]"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_batch_goes_timeout_after_its_first_message() {
        let wires = Wires::new(10);
        let (input, out) = wires.ports();
        let task = run(Batcher::new(10, Duration::from_secs(1)), input, out, meta);
        let driver = async {
            let start = Instant::now();
            wires.push("1");
            tokio::time::sleep(Duration::from_millis(400)).await;
            wires.push("2");
            assert_eq!(wires.next_json().await, "[1,2]");
            assert_eq!(start.elapsed(), Duration::from_secs(1));
            wires.push("3");
            assert_eq!(wires.next_json().await, "[3]");
            assert_eq!(start.elapsed(), Duration::from_secs(2));
            wires.close();
        };
        let (result, ()) = tokio::join!(task, driver);
        assert!(result.is_ok());
        assert!(wires.sent().is_empty());
    }

    #[tokio::test]
    async fn a_batch_carries_its_inputs_acknowledgements_and_shared_topic() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut h = Harness::new(&super::SPEC, json!({"size": 3}));
        for v in [1, 2] {
            let s = seen.clone();
            let mut meta = Meta::new("t".into(), 0);
            meta.topic = Some("a/b".into());
            let mut m = Message::new(value::int(v), meta);
            m.ack = Some(Ack::new(move |o| s.lock().unwrap().push(o)));
            h.push_message("in", m);
        }
        let out = h.run_to_end().await;
        let batch = &out.messages("out")[0];
        assert_eq!((batch.meta.topic.as_deref(), &*batch.meta.source), (Some("a/b"), "test"));
        assert!(seen.lock().unwrap().is_empty(), "acknowledged before the batch was done");
        drop(out);
        assert_eq!(*seen.lock().unwrap(), [Outcome::Delivered, Outcome::Delivered]);
    }

    #[tokio::test]
    async fn size_must_be_positive() {
        let mut h = Harness::new(&super::SPEC, json!({"size": 0}));
        assert_eq!(h.run_to_end().await.result.unwrap().unwrap_err().0, "`size` must be at least 1");
    }
}
