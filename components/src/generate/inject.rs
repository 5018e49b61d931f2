//! `inject`: fixed messages, for tests and examples.

use std::time::Duration;

use fbp_runtime::spec::{KeySpec, KeyType};
use fbp_runtime::value::{self, Value};
use fbp_runtime::{
    Acks, BuildContext, ComponentSpec, Context, Delivery, Failure, Instance, Kind, Message, PortSpec, Task, TaskFuture,
};
use serde::Deserialize;

use crate::generate::{Pace, send_unless_stopped};

/// The `inject` declaration.
pub static SPEC: ComponentSpec = ComponentSpec {
    name: "inject",
    summary: "Emit a fixed list of messages, then finish.",
    doc: "Emits the payloads listed in `messages`, in order, one every `interval` (the first at \
          once), goes through the list `repeat` times, then finishes. Payloads are any JSON \
          values. Useful for tests and examples.",
    kind: Kind::Source,
    inputs: &[],
    outputs: &[PortSpec { name: "out", ty: "json", doc: "the listed payloads, in order" }],
    config: &[
        KeySpec::required(
            "messages",
            KeyType::Any,
            "The payloads to send: an array of any JSON values, e.g. `[{ value = 1 }, { value = 2 }]`.",
        ),
        KeySpec::new(
            "interval",
            KeyType::Duration,
            "\"0s\"",
            "Time between two messages; `\"0s\"` sends them without pause.",
        ),
        KeySpec::new(
            "repeat",
            KeyType::Integer,
            "1",
            "How many times to go through the list; 0 repeats it until the flow shuts down.",
        ),
    ],
    delivery: Delivery::Generated,
    acks: Acks::Prompt,
    stateless: false,
    example: "[components.fixtures]\ntype = \"inject\"\nconfig = { messages = [{ sensor = \"a\", value = 30 }, { sensor = \"b\", value = 20 }], interval = \"100ms\" }\n",
    build,
    ports: None,
    probe: None,
};

#[derive(Deserialize)]
struct Config {
    messages: serde_json::Value,
    #[serde(deserialize_with = "fbp_runtime::units::duration")]
    interval: Duration,
    repeat: u64,
}

struct Inject {
    payloads: Vec<Value>,
    interval: Duration,
    repeat: u64,
}

fn build(ctx: &BuildContext) -> Result<Instance, String> {
    let config: Config = ctx.parse()?;
    let serde_json::Value::Array(messages) = config.messages else {
        return Err("`messages` must be an array of payloads, e.g. `[{ value = 1 }]`".into());
    };
    Ok(Instance::task(Inject {
        payloads: messages.iter().map(value::from_serde).collect(),
        interval: config.interval,
        repeat: match config.repeat {
            0 => u64::MAX,
            n => n,
        },
    }))
}

impl Task for Inject {
    fn run(self: Box<Self>, ctx: Context) -> TaskFuture {
        Box::pin(async move { self.emit(&ctx).await })
    }
}

impl Inject {
    async fn emit(&self, ctx: &Context) -> Result<(), Failure> {
        if self.payloads.is_empty() {
            return Ok(());
        }
        let out = ctx.output("out");
        let mut pace = Pace::new(self.interval);
        let all = (0..self.repeat).flat_map(|_| self.payloads.iter());
        for payload in all {
            let msg = Message::new(payload.clone(), ctx.meta());
            if !pace.wait(ctx).await || !send_unless_stopped(ctx, &out, msg).await? {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use fbp_runtime::testing::Harness;
    use serde_json::json;

    #[tokio::test]
    async fn emits_the_messages_in_order_repeat_times() {
        let messages = json!([{"a": 1}, "text", [1, 2], null]);
        let mut h = Harness::new(&super::SPEC, json!({"messages": messages, "repeat": 2}));
        let out = h.run().await;
        assert!(matches!(out.result, Some(Ok(()))));
        let once = [r#"{"a":1}"#, r#""text""#, "[1,2]", "null"];
        assert_eq!(out.json("out"), [once, once].concat());
    }

    #[tokio::test(start_paused = true)]
    async fn waits_interval_between_messages() {
        let config = json!({"messages": [1, 2, 3], "interval": "1s"});
        let mut h = Harness::new(&super::SPEC, config);
        let start = tokio::time::Instant::now();
        let out = h.run().await;
        assert_eq!(out.json("out"), ["1", "2", "3"]);
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test]
    async fn messages_must_be_an_array() {
        let mut h = Harness::new(&super::SPEC, json!({"messages": {"a": 1}}));
        let err = h.run().await.result.unwrap().unwrap_err().0;
        assert!(err.contains("array"), "{err}");
    }
}
