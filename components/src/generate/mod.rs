//! Sources that generate their own messages: counters, simulated sensors,
//! fixed test messages.

pub mod counter;
pub mod fault;
pub mod inject;
pub mod sensor_sim;

use std::time::Duration;

use fbp_runtime::queue::OutPort;
use fbp_runtime::{Context, Failure, Message};
use tokio::time::{Interval, MissedTickBehavior};

/// How a source paces itself: one turn per `interval`, the first at once;
/// for `interval = "0s"`, no pause at all.
pub(crate) struct Pace {
    ticks: Option<Interval>,
}

impl Pace {
    /// Pacing for `interval`. After a stall (back-pressure) the pace resumes
    /// rather than bursting to catch up.
    pub(crate) fn new(interval: Duration) -> Self {
        let ticks = (!interval.is_zero()).then(|| {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            ticks
        });
        Pace { ticks }
    }

    /// Waits for the next turn; `false` when the flow shuts down first.
    ///
    /// Without an interval this costs a token check and tokio's cooperative
    /// budget, which yields to other tasks now and then.
    pub(crate) async fn wait(&mut self, ctx: &Context) -> bool {
        let Some(ticks) = &mut self.ticks else {
            tokio::task::consume_budget().await;
            return !ctx.shutdown().is_cancelled();
        };
        tokio::select! {
            biased;
            _ = ctx.shutdown().cancelled() => false,
            _ = ticks.tick() => true,
        }
    }
}

/// Sends `msg`; `false` when the flow shuts down while the port is full.
pub(crate) async fn send_unless_stopped(ctx: &Context, out: &OutPort, msg: Message) -> Result<bool, Failure> {
    tokio::select! {
        biased;
        sent = out.send(msg) => sent.map(|()| true).map_err(Failure::from),
        _ = ctx.shutdown().cancelled() => Ok(false),
    }
}
