//! What the timed transforms (`batch`, `throttle`, `delay`) share: a sleep
//! that may have no deadline, a bound on configured durations, and, for
//! their tests, an input and an output queue to drive them through.

use std::future::pending;
use std::time::Duration;

use tokio::time::Instant;

/// Messages taken from the input at a time.
pub(crate) const BATCH: usize = 256;

/// Thirty years: longer durations are treated as this one, so adding them to
/// an instant never overflows (tokio caps its timers the same way).
const FOREVER: Duration = Duration::from_secs(86_400 * 365 * 30);

/// A configured duration, capped at thirty years.
pub(crate) fn capped(d: Duration) -> Duration {
    d.min(FOREVER)
}

/// Sleeps until `deadline`; without one, never returns.
pub(crate) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => pending().await,
    }
}

#[cfg(test)]
pub(crate) mod wires {
    use std::sync::Arc;

    use fbp_runtime::queue::{InPort, OutPort, Queue, WhenFull};
    use fbp_runtime::{Message, Meta, value};

    /// An input and an output queue to run a task's loop between.
    pub(crate) struct Wires {
        input: Queue,
        output: Queue,
        seq: std::cell::Cell<u64>,
    }

    impl Wires {
        /// Queues holding `capacity` messages each.
        pub(crate) fn new(capacity: usize) -> Self {
            let q = || Queue::new(capacity, WhenFull::Block);
            Wires { input: q(), output: q(), seq: Default::default() }
        }

        /// The ports the loop under test reads and writes.
        pub(crate) fn ports(&self) -> (InPort, OutPort) {
            (
                InPort::new(vec![self.input.receiver()], Arc::default()),
                OutPort::new(vec![self.output.sender()], Arc::default()),
            )
        }

        /// Queues a JSON payload on the input; `false` when it is full.
        pub(crate) fn push(&self, json: &str) -> bool {
            let meta = Meta::new("test".into(), self.seq.replace(self.seq.get() + 1));
            self.push_message(Message::new(value::parse_json(json.as_bytes()).expect("test JSON"), meta))
        }

        /// Queues a message on the input; `false` when it is full.
        pub(crate) fn push_message(&self, msg: Message) -> bool {
            self.input.sender().0.try_send(msg).is_ok()
        }

        /// Ends the input.
        pub(crate) fn close(&self) {
            self.input.close();
        }

        /// Messages waiting on the input.
        pub(crate) fn queued(&self) -> usize {
            self.input.len()
        }

        /// Waits for the next output.
        pub(crate) async fn next(&self) -> Message {
            self.output.receiver().recv().await.expect("the output queue stays open")
        }

        /// The payload of the next output, as JSON.
        pub(crate) async fn next_json(&self) -> String {
            value::to_json_string(&self.next().await.payload)
        }

        /// The outputs so far, as JSON.
        pub(crate) fn sent(&self) -> Vec<String> {
            let rx = self.output.receiver();
            std::iter::from_fn(|| rx.try_recv().ok()).map(|m| value::to_json_string(&m.payload)).collect()
        }
    }
}
