//! The bounded many-to-many channel under every connection.
//!
//! One lock around a `VecDeque`, and a waker on each side: a run of messages
//! goes in or out under one lock and wakes the other side once, where a
//! channel that moves one message at a time takes a lock or two per message
//! to wake its waiters. Messages waiting to go are kept until a receiver
//! takes them, also after the channel is closed: receivers drain what is
//! queued, then see the end. Only [`Sender::close`] closes it; dropping
//! handles does not (the network keeps both ends for the instances it
//! restarts).

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

use crate::message::Message;

/// Creates a channel that holds at most `capacity` messages (at least one).
pub fn bounded(capacity: usize) -> (Sender, Receiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        capacity: capacity.max(1),
        readable: Notify::new(),
        writable: Notify::new(),
    });
    (Sender(shared.clone()), Receiver(shared))
}

struct Shared {
    state: Mutex<State>,
    capacity: usize,
    /// Woken when messages are queued or the channel closes, if a receiver waits.
    readable: Notify,
    /// Woken when room is made or the channel closes, if a sender waits.
    writable: Notify,
}

#[derive(Default)]
struct State {
    items: VecDeque<Message>,
    closed: bool,
    readers_waiting: usize,
    writers_waiting: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn room(&self, state: &State) -> bool {
        state.items.len() < self.capacity
    }

    /// Wakes the receivers after messages were queued under `state`.
    fn queued(&self, state: MutexGuard<'_, State>) {
        let wake = state.readers_waiting > 0;
        drop(state);
        if wake {
            self.readable.notify_waiters();
        }
    }

    /// Wakes the senders after messages were taken under `state`.
    fn taken(&self, state: MutexGuard<'_, State>) {
        let wake = state.writers_waiting > 0;
        drop(state);
        if wake {
            self.writable.notify_waiters();
        }
    }

    fn len(&self) -> usize {
        self.lock().items.len()
    }
}

/// A task counted as waiting on one side, uncounted when it stops waiting
/// (also when its future is dropped).
struct Waiting<'a> {
    shared: &'a Shared,
    writer: bool,
    counted: bool,
}

impl<'a> Waiting<'a> {
    fn new(shared: &'a Shared, writer: bool) -> Self {
        Waiting { shared, writer, counted: false }
    }

    fn count(&mut self, state: &mut State, on: bool) {
        if self.counted != on {
            let n = if self.writer { &mut state.writers_waiting } else { &mut state.readers_waiting };
            if on {
                *n += 1
            } else {
                *n -= 1
            }
            self.counted = on;
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.counted {
            let mut state = self.shared.lock();
            self.count(&mut state, false);
        }
    }
}

/// Why [`Sender::try_send`] gave the message back.
#[derive(Debug)]
pub enum TrySendError {
    /// The channel holds `capacity` messages.
    Full(Message),
    /// The channel is closed.
    Closed(Message),
}

/// Why [`Receiver::try_recv`] has no message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryRecvError {
    /// Nothing is queued now.
    Empty,
    /// Closed and drained: nothing more will come.
    Closed,
}

/// The channel is closed (for a receiver: and drained).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

/// Messages waiting to be sent, taken from the front as they are queued.
trait Pending {
    fn take(&mut self) -> Option<Message>;
    fn is_empty(&self) -> bool;
}

impl Pending for Option<Message> {
    fn take(&mut self) -> Option<Message> {
        Option::take(self)
    }

    fn is_empty(&self) -> bool {
        self.is_none()
    }
}

impl Pending for VecDeque<Message> {
    fn take(&mut self) -> Option<Message> {
        self.pop_front()
    }

    fn is_empty(&self) -> bool {
        VecDeque::is_empty(self)
    }
}

/// The sending end; clones share the channel.
#[derive(Clone)]
pub struct Sender(Arc<Shared>);

impl Sender {
    /// Queues `msg` if there is room.
    pub fn try_send(&self, msg: Message) -> Result<(), TrySendError> {
        let mut state = self.0.lock();
        if state.closed {
            return Err(TrySendError::Closed(msg));
        }
        if !self.0.room(&state) {
            return Err(TrySendError::Full(msg));
        }
        state.items.push_back(msg);
        self.0.queued(state);
        Ok(())
    }

    /// Queues `msg`, waiting for room.
    pub async fn send(&self, msg: Message) -> Result<(), Closed> {
        self.send_pending(&mut Some(msg), |_| {}).await
    }

    /// Queues the messages of `batch` from the front, in order, as many as
    /// fit under one lock at a time, waiting for room in between; `on_queued`
    /// hears each run's count as it goes in. A message leaves `batch` only
    /// as it is queued: on `Closed`, or when the future is dropped while it
    /// waits for room, `batch` holds exactly the messages not queued.
    pub async fn send_from(&self, batch: &mut VecDeque<Message>, on_queued: impl FnMut(usize)) -> Result<(), Closed> {
        self.send_pending(batch, on_queued).await
    }

    async fn send_pending(&self, batch: &mut impl Pending, mut on_queued: impl FnMut(usize)) -> Result<(), Closed> {
        let mut waiting = Waiting::new(&self.0, true);
        while !batch.is_empty() {
            let writable = self.0.writable.notified();
            let queued = {
                let mut state = self.0.lock();
                waiting.count(&mut state, false);
                if state.closed {
                    return Err(Closed);
                }
                let before = state.items.len();
                while self.0.room(&state)
                    && let Some(m) = batch.take()
                {
                    state.items.push_back(m);
                }
                if !batch.is_empty() {
                    waiting.count(&mut state, true);
                }
                let queued = state.items.len() - before;
                if queued > 0 {
                    self.0.queued(state);
                }
                queued
            };
            if queued > 0 {
                on_queued(queued);
            }
            if !batch.is_empty() {
                writable.await;
            }
        }
        Ok(())
    }

    /// Queues `msg`, dropping the oldest queued message if full; returns
    /// the message dropped.
    pub fn force_send(&self, msg: Message) -> Result<Option<Message>, Closed> {
        let mut state = self.0.lock();
        if state.closed {
            return Err(Closed);
        }
        let displaced = if self.0.room(&state) { None } else { state.items.pop_front() };
        state.items.push_back(msg);
        self.0.queued(state);
        Ok(displaced)
    }

    /// Closes the channel and wakes everyone waiting on it.
    pub fn close(&self) {
        self.0.lock().closed = true;
        self.0.readable.notify_waiters();
        self.0.writable.notify_waiters();
    }

    /// Whether the channel has been closed.
    pub fn is_closed(&self) -> bool {
        self.0.lock().closed
    }
}

/// The receiving end; clones share the channel (each message goes to one of them).
#[derive(Clone)]
pub struct Receiver(Arc<Shared>);

impl Receiver {
    /// The next message, if one is queued.
    pub fn try_recv(&self) -> Result<Message, TryRecvError> {
        let mut state = self.0.lock();
        match state.items.pop_front() {
            Some(m) => {
                self.0.taken(state);
                Ok(m)
            }
            None if state.closed => Err(TryRecvError::Closed),
            None => Err(TryRecvError::Empty),
        }
    }

    /// Moves up to `max` queued messages to `buf` under one lock; how many,
    /// or `Closed` once the channel is closed and drained.
    pub fn try_recv_many(&self, buf: &mut Vec<Message>, max: usize) -> Result<usize, Closed> {
        let mut state = self.0.lock();
        let n = state.items.len().min(max);
        if n == 0 {
            return if state.closed { Err(Closed) } else { Ok(0) };
        }
        buf.extend(state.items.drain(..n));
        self.0.taken(state);
        Ok(n)
    }

    /// Waits for the next message; `Closed` once the channel is closed and drained.
    /// Cancel-safe: a message is taken only when this returns it.
    pub async fn recv(&self) -> Result<Message, Closed> {
        let mut waiting = Waiting::new(&self.0, false);
        loop {
            let readable = self.0.readable.notified();
            {
                let mut state = self.0.lock();
                waiting.count(&mut state, false);
                if let Some(m) = state.items.pop_front() {
                    self.0.taken(state);
                    return Ok(m);
                }
                if state.closed {
                    return Err(Closed);
                }
                waiting.count(&mut state, true);
            }
            readable.await;
        }
    }

    /// Messages queued.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the channel has been closed (messages may still be queued).
    pub fn is_closed(&self) -> bool {
        self.0.lock().closed
    }
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for Receiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("Channel")
            .field("len", &state.items.len())
            .field("capacity", &self.capacity)
            .field("closed", &state.closed)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::message::Meta;
    use crate::value;

    fn msg(i: i64) -> Message {
        Message::new(value::int(i), Meta::new("t".into(), i as u64))
    }

    fn num(m: &Message) -> i64 {
        value::as_f64(&m.payload).unwrap() as i64
    }

    /// Polls `f` until it holds or five seconds pass.
    async fn eventually(f: impl Fn() -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !f() {
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::task::yield_now().await;
        }
        true
    }

    #[tokio::test]
    async fn a_batch_larger_than_the_channel_arrives_whole_and_in_order() {
        let (tx, rx) = bounded(3);
        let writer = tokio::spawn(async move {
            let mut queued = 0;
            tx.send_from(&mut (0..100).map(msg).collect(), |n| queued += n).await.map(|()| queued)
        });
        let mut got = Vec::new();
        while got.len() < 100 {
            let mut buf = Vec::new();
            buf.push(rx.recv().await.unwrap());
            rx.try_recv_many(&mut buf, 10).unwrap();
            assert!(buf.len() <= 4, "more than the capacity (and the one awaited) at once: {}", buf.len());
            got.extend(buf.iter().map(num));
        }
        assert_eq!(writer.await.unwrap(), Ok(100));
        assert_eq!(got, (0..100).collect::<Vec<_>>());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_senders_and_receivers_lose_and_repeat_nothing() {
        let (tx, rx) = bounded(7);
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let tx = tx.clone();
                tokio::spawn(async move {
                    for i in 0..500 {
                        tx.send(msg(w * 1000 + i)).await.unwrap();
                    }
                })
            })
            .collect();
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let rx = rx.clone();
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    while let Ok(m) = rx.recv().await {
                        got.push(num(&m));
                    }
                    got
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
        tx.close();
        let mut all = Vec::new();
        for r in readers {
            all.extend(r.await.unwrap());
        }
        all.sort();
        let want: Vec<i64> = (0..4).flat_map(|w| (0..500).map(move |i| w * 1000 + i)).collect();
        assert_eq!(all, want);
    }

    #[tokio::test]
    async fn close_wakes_a_waiting_receiver_after_it_drains_and_a_waiting_sender() {
        let (tx, rx) = bounded(1);
        tx.try_send(msg(1)).unwrap();
        assert!(matches!(tx.try_send(msg(2)), Err(TrySendError::Full(_))));
        let blocked = {
            let tx = tx.clone();
            tokio::spawn(async move { tx.send(msg(3)).await })
        };
        assert!(eventually(|| tx.0.lock().writers_waiting == 1).await, "the sender never waited");
        tx.close();
        assert_eq!(blocked.await.unwrap(), Err(Closed));
        assert_eq!(tx.0.lock().writers_waiting, 0);
        assert!(matches!(tx.try_send(msg(4)), Err(TrySendError::Closed(_))));
        assert_eq!(num(&rx.recv().await.unwrap()), 1, "what was queued is still delivered");
        assert_eq!(rx.recv().await.map(|m| num(&m)), Err(Closed));
        assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Closed);

        let (tx, rx) = bounded(1);
        let waiting = tokio::spawn(async move { rx.recv().await.map(|m| num(&m)) });
        assert!(eventually(|| tx.0.lock().readers_waiting == 1).await, "the receiver never waited");
        tx.close();
        assert_eq!(waiting.await.unwrap(), Err(Closed));
    }

    #[tokio::test]
    async fn a_cancelled_wait_is_uncounted_and_takes_nothing() {
        let (tx, rx) = bounded(2);
        let gave_up = tokio::time::timeout(Duration::from_millis(10), rx.recv()).await;
        assert!(gave_up.is_err());
        assert_eq!(tx.0.lock().readers_waiting, 0);
        tx.try_send(msg(1)).unwrap();
        tx.try_send(msg(2)).unwrap();
        let gave_up = tokio::time::timeout(Duration::from_millis(10), tx.send(msg(3))).await;
        assert!(gave_up.is_err());
        assert_eq!(tx.0.lock().writers_waiting, 0);
        assert_eq!(rx.len(), 2);
        assert_eq!(tx.force_send(msg(4)).unwrap().map(|m| num(&m)), Some(1));
        let mut buf = Vec::new();
        assert_eq!(rx.try_recv_many(&mut buf, 10), Ok(2));
        assert_eq!(buf.iter().map(num).collect::<Vec<_>>(), vec![2, 4]);
        assert!(rx.is_empty() && !rx.is_closed());
    }

    #[tokio::test]
    async fn a_batch_cancelled_while_it_waits_keeps_what_it_did_not_queue() {
        let (tx, rx) = bounded(3);
        let mut batch: VecDeque<Message> = (0..5).map(msg).collect();
        let mut queued = 0;
        let gave_up = tokio::time::timeout(Duration::from_millis(10), tx.send_from(&mut batch, |n| queued += n)).await;
        assert!(gave_up.is_err());
        assert_eq!(queued, 3);
        assert_eq!(batch.iter().map(num).collect::<Vec<_>>(), vec![3, 4]);
        let mut buf = Vec::new();
        assert_eq!(rx.try_recv_many(&mut buf, 10), Ok(3));
        assert_eq!(buf.iter().map(num).collect::<Vec<_>>(), vec![0, 1, 2]);
    }
}
