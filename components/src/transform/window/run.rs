//! The async side of `window`: waits for input or for the next window's
//! end, feeds the state machine, and sends what it emits.

use std::future::{Future, pending};
use std::time::SystemTime;

use fbp_runtime::queue::{InPort, OutPort};
use fbp_runtime::{Ack, Context, Failure, Message, Meta};
use tokio::time::{Instant, sleep_until};

use super::state::{Emit, Windows};

/// Messages taken from the input at a time.
const BATCH: usize = 256;

/// What the loop needs of the network besides its ports: [`Context`] in a
/// flow, a recorder in tests.
pub(super) trait Network: Sync {
    /// Fresh metadata for an output.
    fn meta(&self) -> Meta;
    /// Sends a message the window cannot take to `err`.
    fn reject(&self, msg: &Message, error: &str) -> impl Future<Output = Result<(), Failure>> + Send;
    /// Logs a warning about the window's state.
    fn warn(&self, what: &str);
}

impl Network for Context {
    fn meta(&self) -> Meta {
        Context::meta(self)
    }

    fn reject(&self, msg: &Message, error: &str) -> impl Future<Output = Result<(), Failure>> + Send {
        Context::reject(self, msg, error)
    }

    fn warn(&self, what: &str) {
        tracing::warn!(component = %self.name, "{what}");
    }
}

/// Processing time: wall-clock readings that advance with tokio's monotonic
/// (and, in tests, pausable) clock, so windows never see time go backwards.
#[derive(Clone, Copy, Debug)]
pub(super) struct Clock {
    start: Instant,
    wall: SystemTime,
}

impl Clock {
    /// A clock that reads the wall time now.
    pub(super) fn starting_now() -> Self {
        Clock::at(SystemTime::now())
    }

    /// A clock that reads `wall` now.
    pub(super) fn at(wall: SystemTime) -> Self {
        Clock { start: Instant::now(), wall }
    }

    fn now(&self) -> SystemTime {
        self.wall + self.start.elapsed()
    }

    fn deadline(&self, at: SystemTime) -> Instant {
        self.start + at.duration_since(self.wall).unwrap_or_default()
    }
}

enum Event {
    /// A window has ended.
    Due,
    /// A batch arrived (`true`) or the input ended (`false`).
    Input(bool),
}

/// Runs the windows until the input ends, then flushes what they hold.
pub(super) async fn run(
    mut windows: Windows,
    clock: Clock,
    mut input: InPort,
    out: OutPort,
    net: &impl Network,
) -> Result<(), Failure> {
    let mut batch = Vec::with_capacity(BATCH);
    let mut evictions = Evictions::default();
    loop {
        let due = windows.next_due().map(|at| clock.deadline(at));
        match next_event(&mut input, &mut batch, due).await {
            Event::Due => send(windows.flush_due(clock.now()), &out, net).await?,
            Event::Input(true) => take(&mut windows, &mut batch, clock.now(), &out, net).await?,
            Event::Input(false) => break,
        }
        evictions.look(&windows, net);
    }
    send(windows.flush_all(), &out, net).await
}

/// Waits for input or the deadline, whichever comes first (the deadline
/// first when both are ready, so a busy input cannot hold windows back).
async fn next_event(input: &mut InPort, batch: &mut Vec<Message>, due: Option<Instant>) -> Event {
    let timer = async {
        match due {
            Some(deadline) => sleep_until(deadline).await,
            None => pending().await,
        }
    };
    tokio::select! {
        biased;
        () = timer => Event::Due,
        more = input.recv_many(batch, BATCH) => Event::Input(more),
    }
}

async fn take(
    windows: &mut Windows,
    batch: &mut Vec<Message>,
    now: SystemTime,
    out: &OutPort,
    net: &impl Network,
) -> Result<(), Failure> {
    let mut emits = Vec::new();
    for msg in batch.drain(..) {
        match windows.add(&msg, now) {
            Ok(full) => emits.extend(full),
            Err(e) => net.reject(&msg, &e).await?,
        }
    }
    emits.extend(windows.take_early());
    send(emits, out, net).await
}

/// Groups flushed early for `max_groups`: warned about when it starts, then
/// at most every 10 s with the count since the last warning.
#[derive(Default)]
struct Evictions {
    warned: u64,
    at: Option<Instant>,
}

impl Evictions {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(10);

    fn look(&mut self, windows: &Windows, net: &impl Network) {
        let evicted = windows.evicted();
        if evicted == self.warned || self.at.is_some_and(|at| at.elapsed() < Self::EVERY) {
            return;
        }
        net.warn(&format!(
            "{} groups flushed before their window ended: more than `max_groups` at once",
            evicted - self.warned
        ));
        (self.warned, self.at) = (evicted, Some(Instant::now()));
    }
}

async fn send(emits: Vec<Emit>, out: &OutPort, net: &impl Network) -> Result<(), Failure> {
    for emit in emits {
        let mut msg = Message::new(emit.payload, net.meta());
        msg.ack = Ack::merge(emit.acks);
        out.send(msg).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, UNIX_EPOCH};

    use fbp_runtime::queue::{Queue, WhenFull};
    use fbp_runtime::value;
    use serde_json::json;
    use tokio::time::sleep;

    use super::super::state::{Agg, Layout, Shape};
    use super::*;

    #[derive(Default)]
    struct Recorder {
        rejected: Mutex<Vec<String>>,
        warned: Mutex<Vec<String>>,
    }

    impl Network for Recorder {
        fn meta(&self) -> Meta {
            Meta::new("window".into(), 0)
        }

        fn reject(&self, _msg: &Message, error: &str) -> impl Future<Output = Result<(), Failure>> + Send {
            self.rejected.lock().unwrap().push(error.to_string());
            std::future::ready(Ok(()))
        }

        fn warn(&self, what: &str) {
            self.warned.lock().unwrap().push(what.to_string());
        }
    }

    fn tumbling_avg(every: Duration) -> Windows {
        let layout = Layout { group_by: Some("sensor".into()), aggregates: vec![Agg::Avg] };
        Windows::new(Shape::Time { every, size: every }, layout, "value".into(), true)
    }

    fn push(q: &Queue, sensor: &str, value: serde_json::Value) {
        let payload = value::from_serde(&json!({"sensor": sensor, "value": value}));
        q.sender().0.try_send(Message::new(payload, Meta::new("t".into(), 0))).unwrap();
    }

    fn drain(q: &Queue) -> Vec<serde_json::Value> {
        let rx = q.receiver();
        std::iter::from_fn(|| rx.try_recv().ok()).map(|m| value::to_serde(&m.payload)).collect()
    }

    fn summary(p: &serde_json::Value) -> (String, f64, String) {
        let s = |k: &str| p[k].as_str().unwrap().to_string();
        (s("sensor"), p["avg"].as_f64().unwrap(), s("window_end"))
    }

    #[tokio::test(start_paused = true)]
    async fn emits_each_window_when_it_ends_and_the_rest_when_input_ends() {
        let (input, output) = (Queue::new(100, WhenFull::Block), Queue::new(100, WhenFull::Block));
        let net = Recorder::default();
        // Three seconds into the window [1000s, 1010s): it ends in 7 s.
        let clock = Clock::at(UNIX_EPOCH + Duration::from_secs(1003));
        let ports =
            (InPort::new(vec![input.receiver()], Arc::default()), OutPort::new(vec![output.sender()], Arc::default()));
        let window = run(tumbling_avg(Duration::from_secs(10)), clock, ports.0, ports.1, &net);
        let driver = async {
            push(&input, "a", json!(1));
            push(&input, "b", json!(5));
            push(&input, "a", json!(3));
            push(&input, "a", json!("x"));
            sleep(Duration::from_millis(6900)).await;
            assert!(drain(&output).is_empty(), "emitted before the window ended");
            sleep(Duration::from_millis(200)).await;
            let end = "1970-01-01T00:16:50.000Z".to_string();
            let first: Vec<_> = drain(&output).iter().map(summary).collect();
            assert_eq!(first, [("a".into(), 2.0, end.clone()), ("b".into(), 5.0, end)]);
            push(&input, "a", json!(10));
            input.close();
        };
        let (result, ()) = tokio::join!(window, driver);
        assert!(result.is_ok());
        let rest: Vec<_> = drain(&output).iter().map(summary).collect();
        assert_eq!(rest, [("a".into(), 10.0, "1970-01-01T00:17:00.000Z".into())]);
        assert_eq!(*net.rejected.lock().unwrap(), ["field `value` is string, not a number"]);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_windows_wait_without_a_timer() {
        let input = Queue::new(10, WhenFull::Block);
        let output = Queue::new(10, WhenFull::Block);
        let net = Recorder::default();
        let clock = Clock::at(UNIX_EPOCH + Duration::from_secs(1003));
        let ports =
            (InPort::new(vec![input.receiver()], Arc::default()), OutPort::new(vec![output.sender()], Arc::default()));
        let window = run(tumbling_avg(Duration::from_secs(10)), clock, ports.0, ports.1, &net);
        let driver = async {
            sleep(Duration::from_secs(3600)).await;
            input.close();
        };
        let start = Instant::now();
        let (result, ()) = tokio::join!(window, driver);
        assert!(result.is_ok());
        assert_eq!(start.elapsed(), Duration::from_secs(3600));
        assert!(drain(&output).is_empty());
    }
}
