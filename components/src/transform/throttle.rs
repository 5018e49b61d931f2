//! `throttle`: at most `rate` messages per `per`.
//!
//! `Limiter` keeps the log of recent sends and reads no clock; `run`
//! waits for room (or drops) and sends.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fbp_runtime::queue::{InPort, OutPort};
use fbp_runtime::spec::{KeySpec, KeyType, config_duration};
use fbp_runtime::{
    Acks, BuildContext, ComponentSpec, Context, Delivery, Failure, Instance, Kind, PortSpec, Task, TaskFuture,
};
use serde::Deserialize;
use tokio::time::Instant;

use super::timer::{BATCH, capped, sleep_until};

/// The `throttle` declaration.
pub static SPEC: ComponentSpec = ComponentSpec {
    name: "throttle",
    summary: "Pass at most `rate` messages per `per`; hold back or drop the excess.",
    doc: "Passes messages unchanged, at most `rate` of them in any span of `per` (a sliding \
          window, measured when each message is sent, in steps of a thousandth of `per`). By \
          default a message over the limit waits for room, and the messages behind it wait in \
          the input queue, which slows the flow upstream: nothing is lost. With `drop = true` \
          such a message is dropped instead (acknowledged, and counted as dropped).",
    kind: Kind::Transform,
    inputs: &[PortSpec { name: "in", ty: "any", doc: "messages to pace" }],
    outputs: &[PortSpec { name: "out", ty: "same", doc: "the messages, unchanged, at most `rate` per `per`" }],
    config: &[
        KeySpec::required("rate", KeyType::Integer, "Most messages to pass in any span of `per` (at least 1)."),
        KeySpec::new("per", KeyType::Duration, "\"1s\"", "The span `rate` counts over, e.g. \"1s\" or \"1m\"."),
        KeySpec::new(
            "drop",
            KeyType::Bool,
            "false",
            "What to do with a message over the limit: `false` waits for room (back-pressure), \
             `true` drops it.",
        ),
    ],
    delivery: Delivery::PassThrough,
    acks: Acks::Holds {
        when: "passes each message on with its acknowledgement once there is room, so a message over the \
               limit (and the messages queued behind it) stay unacknowledged for up to `per`; with \
               `drop = true` one over the limit is acknowledged at once",
        hold: |config| match config.get("drop").and_then(serde_json::Value::as_bool) {
            Some(true) => None,
            _ => config_duration(config, "per"),
        },
        fix: "raise `rate`, or set `drop = true`",
    },
    stateless: false,
    example: "[components.pace]\ntype = \"throttle\"\nconfig = { rate = 10, per = \"1s\", drop = false }\n",
    build,
    ports: None,
    probe: None,
};

#[derive(Deserialize)]
struct Config {
    rate: i64,
    #[serde(deserialize_with = "fbp_runtime::units::duration")]
    per: Duration,
    drop: bool,
}

struct Throttle {
    rate: u64,
    per: Duration,
    drop: bool,
}

fn build(ctx: &BuildContext) -> Result<Instance, String> {
    let config: Config = ctx.parse()?;
    let rate = u64::try_from(config.rate).ok().filter(|&n| n > 0);
    match (rate, config.per.is_zero()) {
        (Some(rate), false) => Ok(Instance::task(Throttle { rate, per: capped(config.per), drop: config.drop })),
        (Some(_), true) => Err("`per` must be longer than 0s".into()),
        (None, false) => Err("`rate` must be at least 1".into()),
        (None, true) => Err("`rate` must be at least 1, and `per` longer than 0s".into()),
    }
}

impl Task for Throttle {
    fn run(self: Box<Self>, mut ctx: Context) -> TaskFuture {
        Box::pin(async move {
            let (input, out) = (ctx.input("in"), ctx.output("out"));
            let limiter = Limiter::new(self.rate, self.per, Instant::now());
            match self.drop {
                false => run(limiter, input, out).await,
                true => run_dropping(limiter, input, out, &ctx.metrics().dropped).await,
            }
        })
    }
}

/// Passes every message, each when there is room; the input waits meanwhile.
async fn run(mut limiter: Limiter, mut input: InPort, out: OutPort) -> Result<(), Failure> {
    let mut buf = Vec::with_capacity(BATCH);
    loop {
        // Take only as many as may pass now, so the rest wait upstream.
        let free = limiter.wait_for_room().await;
        if !input.recv_many(&mut buf, usize::try_from(free).unwrap_or(BATCH).min(BATCH)).await {
            return Ok(());
        }
        for msg in buf.drain(..) {
            limiter.wait_for_room().await;
            out.send(msg).await?;
            limiter.record(Instant::now());
        }
    }
}

/// Passes the messages there is room for and drops the others.
async fn run_dropping(
    mut limiter: Limiter,
    mut input: InPort,
    out: OutPort,
    dropped: &AtomicU64,
) -> Result<(), Failure> {
    let mut buf = Vec::with_capacity(BATCH);
    while input.recv_many(&mut buf, BATCH).await {
        for msg in buf.drain(..) {
            if limiter.free(Instant::now()) == 0 {
                dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            out.send(msg).await?;
            limiter.record(Instant::now());
        }
    }
    Ok(())
}

/// The sends of the last `per`, to tell how many more may go.
///
/// Sends are logged per step of `per / 1000`, each stamped with the end of
/// its step, so memory stays bounded whatever the rate, and a send is
/// forgotten no earlier than `per` after it happened.
struct Limiter {
    rate: u64,
    per: Duration,
    step: Duration,
    origin: Instant,
    /// `(end of step, sends in it)`, oldest first.
    log: VecDeque<(Instant, u64)>,
    /// Sends in `log`.
    logged: u64,
}

impl Limiter {
    fn new(rate: u64, per: Duration, origin: Instant) -> Self {
        let step = (per / 1000).max(Duration::from_nanos(1));
        Limiter { rate, per, step, origin, log: VecDeque::new(), logged: 0 }
    }

    /// How many may be sent at `now`.
    fn free(&mut self, now: Instant) -> u64 {
        while let Some(&(at, n)) = self.log.front()
            && at + self.per <= now
        {
            self.log.pop_front();
            self.logged -= n;
        }
        self.rate.saturating_sub(self.logged)
    }

    /// Records a send at `now`.
    fn record(&mut self, now: Instant) {
        let at = self.step_end(now);
        match self.log.back_mut() {
            Some((last, n)) if *last == at => *n += 1,
            _ => self.log.push_back((at, 1)),
        }
        self.logged += 1;
    }

    /// Waits until a send may go; how many may.
    async fn wait_for_room(&mut self) -> u64 {
        loop {
            match self.free(Instant::now()) {
                0 => sleep_until(self.log.front().map(|&(at, _)| at + self.per)).await,
                free => return free,
            }
        }
    }

    /// The end of the step `now` falls in (`now` itself on a step boundary).
    fn step_end(&self, now: Instant) -> Instant {
        let (since, step) = (now.saturating_duration_since(self.origin).as_nanos(), self.step.as_nanos());
        let steps = since.div_ceil(step);
        self.origin + Duration::from_nanos(u64::try_from(steps * step).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use fbp_runtime::testing::Harness;
    use fbp_runtime::{Ack, Message, Meta, Outcome, value};
    use serde_json::json;
    use tokio::time::Instant;

    use super::{Limiter, run, run_dropping};
    use crate::transform::timer::wires::Wires;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn the_limit_slides_with_time() {
        let t0 = Instant::now();
        let mut l = Limiter::new(2, SECOND, t0);
        l.record(t0);
        l.record(t0 + SECOND / 2);
        assert_eq!(l.free(t0 + SECOND / 2), 0);
        assert_eq!(l.free(t0 + SECOND - Duration::from_nanos(1)), 0);
        assert_eq!(l.free(t0 + SECOND), 1);
        assert_eq!(l.free(t0 + SECOND * 3 / 2), 2);
    }

    #[test]
    fn a_send_is_forgotten_no_earlier_than_per_after_it() {
        let t0 = Instant::now();
        let mut l = Limiter::new(1, SECOND, t0);
        // 0.1 ms into a 1 ms step: stamped with the step's end.
        l.record(t0 + Duration::from_micros(100));
        assert_eq!(l.free(t0 + SECOND + Duration::from_micros(100)), 0);
        assert_eq!(l.free(t0 + SECOND + Duration::from_millis(1)), 1);
        // Many sends in one step share one entry.
        let mut l = Limiter::new(1000, SECOND, t0);
        (0..1000).for_each(|i| l.record(t0 + Duration::from_nanos(i)));
        assert_eq!(l.log.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn excess_messages_wait_in_the_input_queue() {
        let wires = Wires::new(10);
        for v in 1..=5 {
            wires.push(&v.to_string());
        }
        let (input, out) = wires.ports();
        let task = run(Limiter::new(2, SECOND, Instant::now()), input, out);
        let driver = async {
            let start = Instant::now();
            let mut times = Vec::new();
            for _ in 1..=5 {
                wires.next().await;
                times.push(start.elapsed().as_secs());
                if times.len() == 2 {
                    assert_eq!(wires.queued(), 3, "the throttle holds messages it cannot send yet");
                }
            }
            assert_eq!(times, [0, 0, 1, 1, 2]);
            wires.close();
        };
        let (result, ()) = tokio::join!(task, driver);
        assert!(result.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn with_drop_excess_messages_are_dropped_counted_and_acknowledged() {
        let wires = Wires::new(10);
        let acked = Arc::new(Mutex::new(Vec::new()));
        for v in 1..=5 {
            let a = acked.clone();
            let mut m = Message::new(value::int(v), Meta::new("t".into(), 0));
            m.ack = Some(Ack::new(move |o| a.lock().unwrap().push(o)));
            wires.push_message(m);
        }
        let (input, out) = wires.ports();
        let dropped = AtomicU64::new(0);
        let task = run_dropping(Limiter::new(2, SECOND, Instant::now()), input, out, &dropped);
        let driver = async {
            assert_eq!(wires.next().await.payload, value::int(1));
            assert_eq!(wires.next().await.payload, value::int(2));
            tokio::time::sleep(SECOND).await;
            wires.push("6");
            wires.close();
        };
        let (result, ()) = tokio::join!(task, driver);
        assert!(result.is_ok());
        assert_eq!(wires.sent(), ["6"]);
        assert_eq!(dropped.load(Ordering::Relaxed), 3);
        assert_eq!(*acked.lock().unwrap(), [Outcome::Delivered; 5]);
    }

    #[tokio::test]
    async fn passes_everything_under_the_limit_and_rejects_bad_config() {
        let mut h = Harness::new(&super::SPEC, json!({"rate": 10}));
        (1..=3).for_each(|v| h.push_json(&v.to_string()));
        assert_eq!(h.run_to_end().await.json("out"), ["1", "2", "3"]);
        let mut h = Harness::new(&super::SPEC, json!({"rate": 0}));
        assert_eq!(h.run_to_end().await.result.unwrap().unwrap_err().0, "`rate` must be at least 1");
        let mut h = Harness::new(&super::SPEC, json!({"rate": 1, "per": "0s"}));
        assert_eq!(h.run_to_end().await.result.unwrap().unwrap_err().0, "`per` must be longer than 0s");
        let mut h = Harness::new(&super::SPEC, json!({"rate": -1, "per": "0s"}));
        let err = h.run_to_end().await.result.unwrap().unwrap_err().0;
        assert_eq!(err, "`rate` must be at least 1, and `per` longer than 0s");
    }
}
