//! A buffered connection at run time: two tasks around one [`DiskBuffer`].
//!
//! The connection has two queues: its upstream writes into `input`, its
//! target reads from `output`. The writer task takes each message from
//! `input`, appends it and keeps it (with its acknowledgement) until the
//! append is synced: dropping it then tells the source `Delivered`. The reader
//! task reads records back, gives each a new acknowledgement that commits the
//! record once the target is done with it, and sends it on to `output`.
//!
//! When `input` closes (the upstream finished, or the flow is stopping) the
//! writer syncs; the reader sends on what is left, closes `output`, and keeps
//! the committed position written until the target has committed it all. A
//! flow stopped before that (its target down past the shutdown timeout, or
//! killed) replays the rest at the next start.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

use super::{Append, DiskBuffer, SYNC_INTERVAL, codec};
use crate::channel::{Receiver, Sender};
use crate::message::{Ack, Message, Outcome};
use crate::metrics::Metrics;
use crate::queue::Queue;
use crate::ratelimit::LogLimit;

/// How long a task waits for a notification before it looks again.
const POLL: Duration = Duration::from_millis(100);

struct Shared {
    buffer: Mutex<DiskBuffer>,
    /// Notified after appends: the reader may have more to read.
    written: Notify,
    /// Notified after commits: a full buffer may have room.
    committed: Notify,
    /// The writer has finished: the reader sends on what is left, then stops.
    closing: AtomicBool,
    /// Warnings per message (rejected downstream, not a message) are limited.
    warnings: LogLimit,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, DiskBuffer> {
        // A panic while holding the lock leaves a buffer whose state is still
        // consistent on disk: go on with it.
        self.buffer.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Starts the two tasks of a buffered connection on `handle`; `metrics` is
/// the upstream component's, where records dropped by `drop_oldest` count.
/// The returned task ends once everything read has been committed and the
/// position written: a flow that ends waits for it (see `network`).
pub fn spawn(
    handle: &tokio::runtime::Handle,
    buffer: DiskBuffer,
    input: &Queue,
    output: &Queue,
    metrics: Arc<Metrics>,
) -> tokio::task::JoinHandle<()> {
    let shared = Arc::new(Shared {
        buffer: Mutex::new(buffer),
        written: Notify::new(),
        committed: Notify::new(),
        closing: AtomicBool::new(false),
        warnings: LogLimit::default(),
    });
    handle.spawn(write(shared.clone(), input.receiver(), metrics));
    handle.spawn(read(shared, output.clone()))
}

async fn write(shared: Arc<Shared>, input: Receiver, metrics: Arc<Metrics>) {
    let mut held = VecDeque::new();
    let mut tick = tokio::time::interval(SYNC_INTERVAL);
    loop {
        tokio::select! {
            biased;
            msg = input.recv() => match msg {
                Ok(m) => append(&shared, m, &mut held, &metrics).await,
                Err(_closed) => break,
            },
            _ = tick.tick() => sync(&shared, &mut held),
        }
    }
    sync(&shared, &mut held);
    shared.closing.store(true, Ordering::Release);
    shared.written.notify_one();
}

/// Appends `msg`, waiting while the buffer is full (`block`), and keeps it
/// until its append is synced. A message the buffer cannot take is rejected.
async fn append(shared: &Shared, msg: Message, held: &mut VecDeque<(u64, Message)>, metrics: &Metrics) {
    let bytes = codec::encode(&msg);
    loop {
        let result = {
            let mut buffer = shared.lock();
            let dropped = buffer.stats().dropped;
            let result = buffer.append(&bytes);
            metrics.dropped.fetch_add(buffer.stats().dropped - dropped, Ordering::Relaxed);
            result
        };
        match result {
            Ok(Append::Written(n)) => {
                held.push_back((n, msg));
                shared.written.notify_one();
                release(shared, held);
                return;
            }
            Ok(Append::Full) => {
                let _ = tokio::time::timeout(POLL, shared.committed.notified()).await;
            }
            Err(e) => {
                tracing::error!(error = %e, "Disk buffer: a message could not be stored; it is rejected.");
                if let Some(ack) = &msg.ack {
                    ack.reject();
                }
                return;
            }
        }
    }
}

fn sync(shared: &Shared, held: &mut VecDeque<(u64, Message)>) {
    let result = {
        let mut buffer = shared.lock();
        if !buffer.sync_pending() {
            return;
        }
        buffer.sync()
    };
    if let Err(e) = result {
        tracing::error!(error = %e, "Disk buffer: sync failed; retrying.");
    }
    release(shared, held);
}

/// Drops (so acknowledges upstream) the held messages whose appends are durable.
fn release(shared: &Shared, held: &mut VecDeque<(u64, Message)>) {
    let synced = shared.lock().synced();
    while held.front().is_some_and(|(n, _)| *n <= synced) {
        held.pop_front();
    }
}

async fn read(shared: Arc<Shared>, output: Queue) {
    let (tx, _) = output.sender();
    loop {
        // Read before looking: a record appended after the last read is not missed.
        let closing = shared.closing.load(Ordering::Acquire);
        let next = shared.lock().read();
        match next {
            Ok(Some(record)) => {
                if !forward(&shared, &tx, record).await {
                    break;
                }
            }
            Ok(None) if closing => break,
            Ok(None) => {
                let _ = tokio::time::timeout(POLL, shared.written.notified()).await;
            }
            Err(e) => {
                tracing::error!(error = %e, "Disk buffer: reading failed; retrying.");
                tokio::time::sleep(POLL).await;
            }
        }
    }
    output.close();
    settle(&shared).await;
}

/// Sends a record on as a message; false when the target's queue is gone
/// (the message is then rejected: its record is replayed at the next start).
async fn forward(shared: &Arc<Shared>, tx: &Sender, record: super::Read) -> bool {
    match codec::decode(&record.payload) {
        Ok(mut msg) => {
            let ack = commit_on_delivery(shared.clone(), record.token);
            msg.ack = Some(ack.clone());
            let sent = tx.send(msg).await.is_ok();
            if !sent {
                ack.reject();
            }
            sent
        }
        Err(e) => {
            warn_limited(shared, &format!("a record is not a message ({e}); skipped"));
            commit(shared, record.token);
            true
        }
    }
}

/// After the last record went out: writes the committed position as the
/// target commits, until everything sent is committed.
async fn settle(shared: &Shared) {
    loop {
        let settled = {
            let mut buffer = shared.lock();
            if let Err(e) = buffer.sync() {
                tracing::error!(error = %e, "Disk buffer: sync failed; retrying.");
            }
            buffer.settled()
        };
        if settled {
            return;
        }
        let _ = tokio::time::timeout(POLL, shared.committed.notified()).await;
    }
}

/// An acknowledgement that commits record `token` once the target delivered
/// it (a rejected record stays and is replayed at the next start).
fn commit_on_delivery(shared: Arc<Shared>, token: u64) -> Ack {
    Ack::new(move |outcome| {
        if outcome == Outcome::Delivered {
            commit(&shared, token);
        } else {
            warn_limited(&shared, "a message was rejected downstream; it is replayed at the next start");
        }
    })
}

fn warn_limited(shared: &Shared, what: &str) {
    let verdict = shared.warnings.check();
    if verdict.log {
        tracing::warn!(left_out = verdict.left_out, "Disk buffer: {what}.");
    }
}

fn commit(shared: &Shared, token: u64) {
    if let Err(e) = shared.lock().commit(token) {
        tracing::error!(error = %e, "Disk buffer: commit failed.");
    }
    shared.committed.notify_one();
}
