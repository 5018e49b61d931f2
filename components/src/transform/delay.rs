//! `delay`: hold each message for a fixed time, keeping order.

use std::collections::VecDeque;
use std::time::Duration;

use fbp_runtime::queue::{InPort, OutPort};
use fbp_runtime::spec::{KeySpec, KeyType, config_duration};
use fbp_runtime::{
    Acks, BuildContext, ComponentSpec, Context, Delivery, Failure, Instance, Kind, Message, PortSpec, Task, TaskFuture,
};
use serde::Deserialize;
use tokio::time::Instant;

use super::timer::{BATCH, capped, sleep_until};

/// Most messages `delay` holds at a time; past this, the input waits upstream.
const HOLD: usize = 1000;

/// The `delay` declaration.
pub static SPEC: ComponentSpec = ComponentSpec {
    name: "delay",
    summary: "Hold each message for a fixed time, keeping their order.",
    doc: "Sends each message unchanged `duration` after it arrived, in arrival order. It holds \
          at most 1000 messages at a time; when that many are waiting, the input waits in its \
          queue (slowing the flow upstream) and a message's delay counts from when `delay` \
          takes it in. When the input ends, the messages held still wait out their delay.",
    kind: Kind::Transform,
    inputs: &[PortSpec { name: "in", ty: "any", doc: "messages to delay" }],
    outputs: &[PortSpec { name: "out", ty: "same", doc: "the messages, unchanged, `duration` later" }],
    config: &[KeySpec::required("duration", KeyType::Duration, "How long to hold each message, e.g. \"500ms\".")],
    delivery: Delivery::PassThrough,
    acks: Acks::Holds {
        when: "passes each message on with its acknowledgement after `duration`: the source waits at least \
               that long for it",
        hold: |config| config_duration(config, "duration"),
        fix: "shorten `duration`",
    },
    stateless: false,
    example: "[components.later]\ntype = \"delay\"\nconfig = { duration = \"500ms\" }\n",
    build,
    ports: None,
    probe: None,
};

#[derive(Deserialize)]
struct Config {
    #[serde(deserialize_with = "fbp_runtime::units::duration")]
    duration: Duration,
}

struct Delay {
    duration: Duration,
}

fn build(ctx: &BuildContext) -> Result<Instance, String> {
    let config: Config = ctx.parse()?;
    Ok(Instance::task(Delay { duration: capped(config.duration) }))
}

impl Task for Delay {
    fn run(self: Box<Self>, mut ctx: Context) -> TaskFuture {
        Box::pin(async move { run(self.duration, ctx.input("in"), ctx.output("out")).await })
    }
}

/// Messages held, each with the time it is due, oldest first.
type Held = VecDeque<(Instant, Message)>;

/// Delays the input until it ends and every held message has gone.
async fn run(delay: Duration, mut input: InPort, out: OutPort) -> Result<(), Failure> {
    let mut held = Held::new();
    let mut buf = Vec::with_capacity(BATCH);
    let mut open = true;
    while open || !held.is_empty() {
        let room = HOLD.saturating_sub(held.len()).min(BATCH);
        let due = held.front().map(|(at, _)| *at);
        tokio::select! {
            biased;
            () = sleep_until(due) => send_due(&mut held, &out).await?,
            more = input.recv_many(&mut buf, room), if open && room > 0 => {
                let at = Instant::now() + delay;
                held.extend(buf.drain(..).map(|m| (at, m)));
                open = more;
            }
        }
    }
    Ok(())
}

/// Sends the held messages whose time has come.
async fn send_due(held: &mut Held, out: &OutPort) -> Result<(), Failure> {
    let now = Instant::now();
    let due = held.iter().take_while(|(at, _)| *at <= now).count();
    for (_, msg) in held.drain(..due) {
        out.send(msg).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use fbp_runtime::testing::Harness;
    use serde_json::json;
    use tokio::time::{Instant, sleep};

    use super::{HOLD, run};
    use crate::transform::timer::wires::Wires;

    const SECOND: Duration = Duration::from_secs(1);

    #[tokio::test(start_paused = true)]
    async fn each_message_goes_duration_after_it_arrived_in_order() {
        let wires = Wires::new(10);
        let (input, out) = wires.ports();
        let task = run(SECOND, input, out);
        let driver = async {
            let start = Instant::now();
            wires.push("1");
            sleep(SECOND / 4).await;
            wires.push("2");
            wires.push("3");
            assert_eq!(wires.next_json().await, "1");
            assert_eq!(start.elapsed(), SECOND);
            assert_eq!(wires.next_json().await, "2");
            assert_eq!(wires.next_json().await, "3");
            assert_eq!(start.elapsed(), SECOND * 5 / 4);
            wires.push("4");
            wires.close();
            assert_eq!(wires.next_json().await, "4");
            assert_eq!(start.elapsed(), SECOND * 9 / 4, "held messages wait out their delay after the input ends");
        };
        let (result, ()) = tokio::join!(task, driver);
        assert!(result.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn holds_at_most_hold_messages_and_the_rest_wait_upstream() {
        let wires = Wires::new(HOLD + 10);
        (0..HOLD + 10).for_each(|i| assert!(wires.push(&i.to_string())));
        let (input, out) = wires.ports();
        let task = run(SECOND, input, out);
        let driver = async {
            sleep(SECOND / 2).await;
            assert_eq!(wires.queued(), 10);
            assert_eq!(wires.next_json().await, "0");
            wires.close();
        };
        let (result, ()) = tokio::join!(task, driver);
        assert!(result.is_ok());
        assert_eq!(wires.sent().len(), HOLD + 9);
    }

    #[tokio::test(start_paused = true)]
    async fn runs_in_a_flow_and_needs_a_duration() {
        let mut h = Harness::new(&super::SPEC, json!({"duration": "10s"}));
        h.push_json("1");
        let start = Instant::now();
        assert_eq!(h.run_to_end().await.json("out"), ["1"]);
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        let mut h = Harness::new(&super::SPEC, json!({}));
        let err = h.run_to_end().await.result.unwrap().unwrap_err().0;
        assert!(err.contains("duration"), "{err}");
    }
}
