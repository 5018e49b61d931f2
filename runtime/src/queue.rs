//! The data plane: bounded queues, one per connection, owned by the network.
//!
//! The network creates every queue before any component starts and keeps a
//! sender and a receiver of each. A component instance gets clones through its
//! [`InPort`]s and [`OutPort`]s; when it fails and is restarted, the new
//! instance gets clones of the same queues, so nothing queued is lost. A queue
//! closes only when the network says so: when every instance of its upstream
//! component has finished.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::channel::{self, Receiver, Sender, TrySendError};

use crate::deadletter::ErrorRoute;
use crate::message::Message;
use crate::metrics::Metrics;
use crate::port::PortType;

/// What a full queue does with a new message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WhenFull {
    /// Wait until there is room (back-pressure). The default.
    #[default]
    Block,
    /// Drop the new message.
    DropNewest,
    /// Drop the oldest queued message to make room.
    DropOldest,
}

impl WhenFull {
    /// Parses the flow-file spelling.
    pub fn parse(s: &str) -> Option<WhenFull> {
        match s {
            "block" => Some(WhenFull::Block),
            "drop_newest" => Some(WhenFull::DropNewest),
            "drop_oldest" => Some(WhenFull::DropOldest),
            _ => None,
        }
    }

    /// The spellings, for errors.
    pub const NAMES: &'static [&'static str] = &["block", "drop_newest", "drop_oldest"];
}

/// One connection's queue.
#[derive(Clone, Debug)]
pub struct Queue {
    tx: Sender,
    rx: Receiver,
    when_full: WhenFull,
}

impl Queue {
    /// A bounded queue holding at most `capacity` messages.
    pub fn new(capacity: usize, when_full: WhenFull) -> Self {
        let (tx, rx) = channel::bounded(capacity);
        Queue { tx, rx, when_full }
    }

    /// Closes the queue: receivers drain what is queued, then see the end.
    pub fn close(&self) {
        self.tx.close();
    }

    /// Whether the queue has been closed.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    /// Whether no message is waiting.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    /// The receiving end, for an in-port.
    pub fn receiver(&self) -> Receiver {
        self.rx.clone()
    }

    /// The sending end, for an out-port.
    pub fn sender(&self) -> (Sender, WhenFull) {
        (self.tx.clone(), self.when_full)
    }
}

/// An in-port: the receiving ends of every connection into it (merge).
pub struct InPort {
    rxs: Vec<Receiver>,
    next: usize,
    metrics: Arc<Metrics>,
    check: Option<(PortType, ErrorRoute)>,
    /// Messages taken that failed the check, not yet on the error route.
    mistyped: VecDeque<Message>,
}

impl InPort {
    /// An in-port reading from these queues.
    pub fn new(rxs: Vec<Receiver>, metrics: Arc<Metrics>) -> Self {
        InPort { rxs, next: 0, metrics, check: None, mistyped: VecDeque::new() }
    }

    /// Checks every message against `ty` (for a port fed by a dynamically typed
    /// one); a message that does not match goes to the error route.
    pub(crate) fn with_check(mut self, ty: PortType, route: ErrorRoute) -> Self {
        self.check = Some((ty, route));
        self
    }

    /// Whether every connection is closed and drained: nothing more will come.
    pub fn is_done(&self) -> bool {
        self.rxs.iter().all(|r| r.is_closed() && r.is_empty())
    }

    /// Resolves once [`InPort::is_done`], looking every 100 ms: for a sink
    /// that waits on something else (its broker coming back) to learn that
    /// the flow is stopping with nothing left for it. Takes no message.
    pub async fn done(&self) {
        while !self.is_done() {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// Waits for the next message; `None` once every connection is closed and drained.
    pub async fn recv(&mut self) -> Option<Message> {
        let mut buf = Vec::with_capacity(1);
        self.recv_many(&mut buf, 1).await;
        buf.pop()
    }

    /// Appends up to `max` messages to `buf`, waiting for at least one.
    /// Returns `false` once every connection is closed and drained.
    /// Cancel-safe: what was taken when the future is dropped is in `buf`
    /// (and counted), or, failing the port's type check, still goes to the
    /// error route on the next call.
    pub async fn recv_many(&mut self, buf: &mut Vec<Message>, max: usize) -> bool {
        let start = buf.len();
        loop {
            self.route_mistyped().await;
            let more = self.take(buf, max).await;
            self.set_aside_mistyped(buf, start);
            self.route_mistyped().await;
            if !more || buf.len() > start {
                return more;
            }
        }
    }

    /// Moves the messages of `buf[start..]` that fail the check aside, for the error route.
    fn set_aside_mistyped(&mut self, buf: &mut Vec<Message>, start: usize) {
        let Some((ty, _)) = &self.check else { return };
        if buf[start..].iter().all(|m| ty.accepts(&m.payload)) {
            return;
        }
        let mut i = start;
        while i < buf.len() {
            if ty.accepts(&buf[i].payload) {
                i += 1;
            } else {
                self.mistyped.push_back(buf.remove(i));
            }
        }
    }

    /// Sends the messages set aside to the error route, each leaving the
    /// queue once routed.
    async fn route_mistyped(&mut self) {
        let Some((ty, route)) = &self.check else { return };
        while let Some(m) = self.mistyped.front() {
            let error = format!("payload is {}, not `{ty}` as this port requires", crate::value::type_name(&m.payload));
            // A route failure means the err port is gone; the message is then only counted.
            let _ = route.route(m, &error, 1).await;
            self.mistyped.pop_front();
        }
    }

    /// Takes up to `max` messages, waiting for at least one, and counts them.
    async fn take(&mut self, buf: &mut Vec<Message>, max: usize) -> bool {
        loop {
            if self.rxs.is_empty() {
                return false;
            }
            if self.try_fill(buf, max) > 0 {
                return true;
            }
            if self.rxs.is_empty() {
                return false;
            }
            let before = buf.len();
            self.wait_any(buf).await;
            if buf.len() > before {
                self.metrics.received.fetch_add(1, Ordering::Relaxed);
                // One message arrived; let its sender go on a little, then take
                // what else is queued, up to `max` in all (fewer wake-ups).
                if max > 1 {
                    tokio::task::yield_now().await;
                }
                self.try_fill(buf, max - 1);
                return true;
            }
        }
    }

    /// Takes what is queued, up to `max`, from the connections in turn
    /// (each run under one lock), starting after the last one taken from.
    fn try_fill(&mut self, buf: &mut Vec<Message>, max: usize) -> usize {
        let start = buf.len();
        let mut idle = 0;
        while buf.len() - start < max && idle < self.rxs.len() {
            let i = self.next % self.rxs.len();
            match self.rxs[i].try_recv_many(buf, max - (buf.len() - start)) {
                Ok(0) => idle += 1,
                Ok(_) => idle = 0,
                Err(channel::Closed) => {
                    self.rxs.swap_remove(i);
                    idle = 0;
                    continue;
                }
            }
            self.next = i + 1;
        }
        self.metrics.received.fetch_add((buf.len() - start) as u64, Ordering::Relaxed);
        buf.len() - start
    }

    async fn wait_any(&mut self, buf: &mut Vec<Message>) {
        let result = if self.rxs.len() == 1 {
            (self.rxs[0].recv().await, 0)
        } else {
            let futs = self.rxs.iter().map(|r| Box::pin(r.recv()));
            let (res, i, _) = futures_util::future::select_all(futs).await;
            (res, i)
        };
        match result {
            (Ok(m), _) => buf.push(m),
            (Err(_), i) => {
                self.rxs.swap_remove(i);
            }
        }
    }
}

/// An out-port: the sending ends of every connection out of it (fan-out copies).
#[derive(Clone)]
pub struct OutPort {
    txs: Vec<(Sender, WhenFull)>,
    metrics: Arc<Metrics>,
}

/// The message could not be sent: every receiver has gone.
#[derive(Debug, thiserror::Error)]
#[error("every receiver of this port has gone")]
pub struct Closed;

impl OutPort {
    /// An out-port writing to these queues.
    pub fn new(txs: Vec<(Sender, WhenFull)>, metrics: Arc<Metrics>) -> Self {
        OutPort { txs, metrics }
    }

    /// Whether any connection leaves this port.
    pub fn is_connected(&self) -> bool {
        !self.txs.is_empty()
    }

    /// Sends a message to every connection: the last gets it, the others a clone.
    /// Waits while a `block` queue is full. An unconnected port acknowledges
    /// (drops) the message.
    /// A send cancelled while it waits (a source told to stop) is not counted.
    pub async fn send(&self, msg: Message) -> Result<(), Closed> {
        if let Some(((last, last_mode), rest)) = self.txs.split_last() {
            for (tx, mode) in rest {
                self.send_one(tx, *mode, msg.clone()).await?;
            }
            self.send_one(last, *last_mode, msg).await?;
        }
        self.metrics.sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Sends every message of `batch`, in order; see [`OutPort::send_batch`].
    pub async fn send_all(&self, batch: impl IntoIterator<Item = Message>) -> Result<(), Closed> {
        self.send_batch(&mut batch.into_iter().collect()).await
    }

    /// Sends the messages of `batch` from the front, in order, each leaving
    /// `batch` once every connection has it: when the future is dropped (a
    /// source told to stop) `batch` holds the messages not sent, for the
    /// source to reject (one fanned out to some connections but not all
    /// stays too). With one `block` connection (the common case) it queues
    /// what fits without waiting and counts once per run of queued
    /// messages, waiting only when the queue is full.
    pub async fn send_batch(&self, batch: &mut VecDeque<Message>) -> Result<(), Closed> {
        let [(tx, WhenFull::Block)] = self.txs.as_slice() else {
            while let Some(m) = batch.front() {
                self.send(m.clone()).await?;
                batch.pop_front();
            }
            return Ok(());
        };
        let count = |n: usize| {
            self.metrics.sent.fetch_add(n as u64, Ordering::Relaxed);
        };
        tx.send_from(batch, count).await.map_err(|_| Closed)
    }

    async fn send_one(&self, tx: &Sender, mode: WhenFull, msg: Message) -> Result<(), Closed> {
        match mode {
            WhenFull::Block => tx.send(msg).await.map_err(|_| Closed),
            WhenFull::DropNewest => match tx.try_send(msg) {
                Ok(()) => Ok(()),
                Err(TrySendError::Full(_)) => {
                    self.metrics.dropped.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                Err(TrySendError::Closed(_)) => Err(Closed),
            },
            WhenFull::DropOldest => match tx.force_send(msg) {
                Ok(Some(_displaced)) => {
                    self.metrics.dropped.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                Ok(None) => Ok(()),
                Err(_) => Err(Closed),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Meta;
    use crate::value;

    fn msg(i: i64) -> Message {
        Message::new(value::int(i), Meta::new("t".into(), i as u64))
    }

    #[tokio::test]
    async fn fan_out_copies_and_merge_drains_all() {
        let (a, b) = (Queue::new(10, WhenFull::Block), Queue::new(10, WhenFull::Block));
        let out = OutPort::new(vec![a.sender(), b.sender()], Arc::default());
        for i in 0..3 {
            out.send(msg(i)).await.unwrap();
        }
        a.close();
        b.close();
        let mut merged = InPort::new(vec![a.receiver(), b.receiver()], Arc::default());
        let mut seen = Vec::new();
        while let Some(m) = merged.recv().await {
            seen.push(value::as_f64(&m.payload).unwrap() as i64);
        }
        seen.sort();
        assert_eq!(seen, vec![0, 0, 1, 1, 2, 2]);
    }

    #[tokio::test]
    async fn recv_one_at_a_time_loses_nothing_when_messages_arrive_while_waiting() {
        let q = Queue::new(100, WhenFull::Block);
        let out = OutPort::new(vec![q.sender()], Arc::default());
        let mut port = InPort::new(vec![q.receiver()], Arc::default());
        let writer = tokio::spawn(async move {
            // Two at a time: the second arrives while the reader handles the first.
            for i in (0..50).step_by(2) {
                out.send(msg(i)).await.unwrap();
                out.send(msg(i + 1)).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        let mut got = Vec::new();
        let read_all = async {
            while got.len() < 50 {
                let m = port.recv().await.unwrap();
                got.push(value::as_f64(&m.payload).unwrap() as i64);
            }
        };
        let in_time = tokio::time::timeout(std::time::Duration::from_secs(5), read_all).await;
        assert!(in_time.is_ok(), "a message was lost: got {} of 50", got.len());
        writer.await.unwrap();
        assert_eq!(got, (0..50).collect::<Vec<_>>());
    }

    /// `send_all` into a queue smaller than the batch waits for room, keeps
    /// the order, counts every message once, and stops at a closed queue.
    #[tokio::test]
    async fn send_all_waits_for_room_keeps_order_and_counts_each_message() {
        let q = Queue::new(3, WhenFull::Block);
        let metrics = Arc::new(Metrics::default());
        let out = OutPort::new(vec![q.sender()], metrics.clone());
        let mut port = InPort::new(vec![q.receiver()], Arc::default());
        let writer = tokio::spawn(async move { out.send_all((0..100).map(msg)).await });
        let mut got = Vec::new();
        while got.len() < 100 {
            got.push(value::as_f64(&port.recv().await.unwrap().payload).unwrap() as i64);
        }
        writer.await.unwrap().unwrap();
        assert_eq!(got, (0..100).collect::<Vec<_>>());
        assert_eq!(metrics.sent.load(Ordering::Relaxed), 100);

        let closed = Queue::new(3, WhenFull::Block);
        let metrics = Arc::new(Metrics::default());
        let out = OutPort::new(vec![closed.sender()], metrics.clone());
        drop(port);
        let rx = closed.receiver();
        out.send_all((0..2).map(msg)).await.unwrap();
        closed.close();
        assert!(out.send_all((2..4).map(msg)).await.is_err());
        assert_eq!(metrics.sent.load(Ordering::Relaxed), 2, "only what was queued is counted");
        assert_eq!(rx.len(), 2);
    }

    #[tokio::test]
    async fn drop_oldest_keeps_the_newest() {
        let q = Queue::new(2, WhenFull::DropOldest);
        let metrics = Arc::new(Metrics::default());
        let out = OutPort::new(vec![q.sender()], metrics.clone());
        for i in 0..5 {
            out.send(msg(i)).await.unwrap();
        }
        q.close();
        let mut port = InPort::new(vec![q.receiver()], Arc::default());
        let mut buf = Vec::new();
        while port.recv_many(&mut buf, 10).await {}
        let got: Vec<_> = buf.iter().map(|m| value::as_f64(&m.payload).unwrap() as i64).collect();
        assert_eq!(got, vec![3, 4]);
        assert_eq!(metrics.dropped.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn queue_survives_its_receivers() {
        let q = Queue::new(4, WhenFull::Block);
        let out = OutPort::new(vec![q.sender()], Arc::default());
        out.send(msg(1)).await.unwrap();
        drop(InPort::new(vec![q.receiver()], Arc::default()));
        let mut again = InPort::new(vec![q.receiver()], Arc::default());
        assert!(again.recv().await.is_some());
    }

    #[tokio::test]
    async fn mistyped_messages_go_to_the_error_route() {
        let q = Queue::new(4, WhenFull::Block);
        let err = Queue::new(4, WhenFull::Block);
        let metrics = Arc::new(Metrics::default());
        let out = OutPort::new(vec![q.sender()], metrics.clone());
        out.send(msg(1)).await.unwrap();
        out.send(Message::new(value::string("x"), Meta::new("t".into(), 9))).await.unwrap();
        q.close();
        let route = ErrorRoute {
            component: "c".into(),
            type_name: "t",
            port: OutPort::new(vec![err.sender()], metrics.clone()),
            dead_letter: None,
            metrics: metrics.clone(),
        };
        let mut port = InPort::new(vec![q.receiver()], metrics.clone()).with_check(PortType::Number, route);
        let mut buf = Vec::new();
        while port.recv_many(&mut buf, 10).await {}
        assert_eq!(buf.len(), 1);
        let rejected = err.receiver().try_recv().unwrap();
        let text = value::to_json_string(&rejected.payload);
        assert!(text.contains("payload is string, not `number`"), "{text}");
        assert_eq!(metrics.errors.load(Ordering::Relaxed), 1);
    }

    /// A receive dropped while the error route is full (a timeout around
    /// `recv_many`) keeps what it took: the good message in `buf`, the
    /// mistyped one for the next call, all counted once.
    #[tokio::test]
    async fn a_cancelled_receive_loses_and_repeats_nothing() {
        use futures_util::FutureExt;
        let q = Queue::new(4, WhenFull::Block);
        let err = Queue::new(1, WhenFull::Block);
        let metrics = Arc::new(Metrics::default());
        let out = OutPort::new(vec![q.sender()], metrics.clone());
        out.send(Message::new(value::string("x"), Meta::new("t".into(), 9))).await.unwrap();
        out.send(msg(1)).await.unwrap();
        q.close();
        let err_out = OutPort::new(vec![err.sender()], Arc::default());
        err_out.send(msg(0)).await.unwrap();
        let route = ErrorRoute {
            component: "c".into(),
            type_name: "t",
            port: err_out,
            dead_letter: None,
            metrics: metrics.clone(),
        };
        let mut port = InPort::new(vec![q.receiver()], metrics.clone()).with_check(PortType::Number, route);
        let mut buf = Vec::new();
        assert!(port.recv_many(&mut buf, 10).now_or_never().is_none(), "the full error route holds it");
        assert_eq!(buf.iter().map(|m| value::as_f64(&m.payload)).collect::<Vec<_>>(), [Some(1.0)]);
        assert_eq!(err.receiver().try_recv().map(|m| value::as_f64(&m.payload)).ok().flatten(), Some(0.0));
        assert!(!port.recv_many(&mut buf, 10).await, "closed and drained");
        let rejected = value::to_json_string(&err.receiver().try_recv().unwrap().payload);
        assert!(rejected.contains("payload is string"), "{rejected}");
        assert_eq!(buf.len(), 1);
        assert_eq!(metrics.received.load(Ordering::Relaxed), 2);
        assert_eq!(metrics.errors.load(Ordering::Relaxed), 1);
    }
}
