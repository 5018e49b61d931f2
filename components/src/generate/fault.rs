//! `fault`: fails on a schedule, for testing how a flow copes.

use fbp_runtime::spec::{KeySpec, KeyType};
use fbp_runtime::{
    Acks, BuildContext, ComponentSpec, Context, Delivery, Failure, Instance, Kind, Message, Outbox, PortSpec, Task,
    TaskFuture, Transform,
};
use serde::Deserialize;

/// The `fault` declaration.
pub static SPEC: ComponentSpec = ComponentSpec {
    name: "fault",
    summary: "Fail, panic or stall on every N-th message (for testing flows).",
    doc: "Passes messages on unchanged, except every `every`-th by input position, where it \
          fails as `mode` says: `error` sends the message to `err` (a message error; the \
          component keeps running), `panic` panics (a failure: the supervisor restarts it and \
          retries the message, which fails again, so it ends in `err` after two restarts), \
          `stall` stops taking input for good (back-pressure reaches its upstream). The position \
          is the message's `seq` in its source plus one, so a retried message fails again.",
    kind: Kind::Transform,
    inputs: &[PortSpec { name: "in", ty: "any", doc: "messages to pass on" }],
    outputs: &[PortSpec { name: "out", ty: "same", doc: "the messages that did not fail, unchanged" }],
    config: &[
        KeySpec::new("every", KeyType::Integer, "1000", "Fail on every message whose position is a multiple of this."),
        KeySpec::new(
            "mode",
            KeyType::Enum(&["error", "panic", "stall"]),
            "\"error\"",
            "How to fail: `error` (to `err`), `panic` (a failure) or `stall` (stop taking input).",
        ),
    ],
    delivery: Delivery::PassThrough,
    acks: Acks::Prompt,
    stateless: true,
    example: "[components.chaos]\ntype = \"fault\"\nconfig = { every = 1000, mode = \"panic\" }\n",
    build,
    ports: None,
    probe: None,
};

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
enum Mode {
    Error,
    Panic,
    Stall,
}

#[derive(Deserialize)]
struct Config {
    every: u64,
    mode: Mode,
}

fn build(ctx: &BuildContext) -> Result<Instance, String> {
    let config: Config = ctx.parse()?;
    if config.every == 0 {
        return Err("`every` must be 1 or more".into());
    }
    Ok(match config.mode {
        Mode::Stall => Instance::task(Stall { every: config.every }),
        mode => Instance::transform(Fault { every: config.every, mode }),
    })
}

fn position(msg: &Message) -> u64 {
    msg.meta.seq + 1
}

struct Fault {
    every: u64,
    mode: Mode,
}

impl Transform for Fault {
    fn process(&mut self, msg: &Message, out: &mut Outbox) -> Result<(), String> {
        let at = position(msg);
        if !at.is_multiple_of(self.every) {
            out.send(msg.clone());
            return Ok(());
        }
        match self.mode {
            Mode::Panic => panic!("injected panic at position {at}"),
            _ => Err(format!("injected fault at position {at}")),
        }
    }
}

struct Stall {
    every: u64,
}

impl Task for Stall {
    fn run(self: Box<Self>, mut ctx: Context) -> TaskFuture {
        Box::pin(async move {
            let mut input = ctx.input("in");
            let out = ctx.output("out");
            while let Some(msg) = input.recv().await {
                if position(&msg).is_multiple_of(self.every) {
                    tracing::warn!(component = %ctx.name, position = position(&msg), "Stalling, as configured.");
                    std::future::pending::<()>().await;
                }
                out.send(msg).await.map_err(Failure::from)?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use fbp_runtime::testing::Harness;
    use fbp_runtime::{Message, Meta, value};
    use serde_json::json;

    fn feed(h: &mut Harness, n: u64) {
        for seq in 0..n {
            h.push_message("in", Message::new(value::int(seq as i64), Meta::new("src".into(), seq)));
        }
    }

    #[tokio::test]
    async fn error_mode_sends_every_nth_to_err_and_the_rest_on() {
        let mut h = Harness::new(&super::SPEC, json!({"every": 3}));
        feed(&mut h, 7);
        let out = h.run_to_end().await;
        assert_eq!(out.json("out"), ["0", "1", "3", "4", "6"]);
        let err = out.json("err");
        assert_eq!(err.len(), 2);
        assert!(err[0].contains("injected fault at position 3"), "{}", err[0]);
    }

    #[tokio::test]
    async fn panic_mode_fails_the_instance_and_keeps_the_message_for_a_retry() {
        let mut h = Harness::new(&super::SPEC, json!({"every": 2, "mode": "panic"}));
        feed(&mut h, 3);
        let out = h.run_to_end().await;
        let failure = out.result.as_ref().unwrap().as_ref().unwrap_err();
        assert!(failure.0.contains("injected panic at position 2"), "{failure}");
        assert_eq!(out.json("out"), ["0"], "what came before the panic is delivered");
    }

    #[tokio::test(start_paused = true)]
    async fn stall_mode_stops_taking_input() {
        let mut h = Harness::new(&super::SPEC, json!({"every": 2, "mode": "stall"}));
        feed(&mut h, 3);
        let stalled = tokio::time::timeout(std::time::Duration::from_secs(3600), h.run_to_end()).await;
        assert!(stalled.is_err(), "a stalled component never finishes");
    }
}
