//! `counter`: DStream's counter source, `{"count": N}` from 1 at an interval.
//!
//! With `interval = "0s"` it sends in a tight loop (for throughput
//! benchmarks): between messages it only checks the shutdown token and
//! tokio's cooperative budget (see `Pace` in the family module).

use std::time::Duration;

use fbp_runtime::spec::{KeySpec, KeyType};
use fbp_runtime::value;
use fbp_runtime::{
    Acks, BuildContext, ComponentSpec, Context, Delivery, Failure, Instance, Kind, Message, PortSpec, Task, TaskFuture,
};
use serde::Deserialize;

use crate::generate::{Pace, send_unless_stopped};

/// The `counter` declaration.
pub static SPEC: ComponentSpec = ComponentSpec {
    name: "counter",
    summary: "Emit {\"count\": N}, counting from 1, at a fixed interval.",
    doc: "Emits `{\"count\": 1}`, `{\"count\": 2}`, ... one every `interval`, the first at once, \
          and finishes after `max_count` messages (never, when it is 0). With `interval = \"0s\"` \
          it sends as fast as the flow takes them. It stops at once when the flow shuts down.",
    kind: Kind::Source,
    inputs: &[],
    outputs: &[PortSpec { name: "out", ty: "{ count = \"number\" }", doc: "`{\"count\": N}`, N counting from 1" }],
    config: &[
        KeySpec::new(
            "interval",
            KeyType::Duration,
            "\"1s\"",
            "Time between two messages; `\"0s\"` sends without pause.",
        ),
        KeySpec::new(
            "max_count",
            KeyType::Integer,
            "0",
            "How many messages to send before finishing; 0 counts forever.",
        ),
    ],
    delivery: Delivery::Generated,
    acks: Acks::Prompt,
    stateless: false,
    example: "[components.ticks]\ntype = \"counter\"\nconfig = { interval = \"500ms\", max_count = 10 }\n",
    build,
    ports: None,
    probe: None,
};

#[derive(Deserialize)]
struct Config {
    #[serde(deserialize_with = "fbp_runtime::units::duration")]
    interval: Duration,
    max_count: u64,
}

struct Counter {
    interval: Duration,
    last: u64,
}

fn build(ctx: &BuildContext) -> Result<Instance, String> {
    let config: Config = ctx.parse()?;
    Ok(Instance::task(Counter {
        interval: config.interval,
        last: match config.max_count {
            0 => u64::MAX,
            n => n,
        },
    }))
}

impl Task for Counter {
    fn run(self: Box<Self>, ctx: Context) -> TaskFuture {
        Box::pin(async move { self.count(&ctx).await })
    }
}

impl Counter {
    async fn count(&self, ctx: &Context) -> Result<(), Failure> {
        let out = ctx.output("out");
        let mut pace = Pace::new(self.interval);
        for n in 1..=self.last {
            if !pace.wait(ctx).await || !send_unless_stopped(ctx, &out, message(ctx, n)).await? {
                break;
            }
        }
        Ok(())
    }
}

fn message(ctx: &Context, n: u64) -> Message {
    let count = value::int(i64::try_from(n).unwrap_or(i64::MAX));
    Message::new(value::object([("count", count)]), ctx.meta())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use fbp_runtime::testing::Harness;
    use serde_json::json;

    #[tokio::test]
    async fn counts_from_one_to_max_count_then_finishes() {
        let mut h = Harness::new(&super::SPEC, json!({"interval": "0s", "max_count": 3}));
        let out = h.run().await;
        assert!(matches!(out.result, Some(Ok(()))));
        assert_eq!(out.json("out"), [r#"{"count":1}"#, r#"{"count":2}"#, r#"{"count":3}"#]);
    }

    #[tokio::test(start_paused = true)]
    async fn paces_by_interval_and_stops_on_shutdown() {
        let mut h = Harness::new(&super::SPEC, json!({"interval": "1s"}));
        let stop = h.shutdown();
        let start = tokio::time::Instant::now();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(2500)).await;
            stop.cancel();
        });
        let out = h.run().await;
        // Ticks at 0s, 1s and 2s; the shutdown at 2.5s ends it before the fourth.
        assert_eq!(out.messages("out").len(), 3);
        assert_eq!(start.elapsed(), Duration::from_millis(2500));
    }

    #[tokio::test]
    async fn tight_loop_stops_on_shutdown() {
        let mut h = Harness::new(&super::SPEC, json!({"interval": "0s"}));
        h.shutdown().cancel();
        let out = h.run().await;
        assert!(matches!(out.result, Some(Ok(()))));
        assert!(out.messages("out").is_empty());
    }
}
